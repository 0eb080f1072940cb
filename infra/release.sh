#!/usr/bin/env bash
# Builds the release artifacts into dist/, from a clean checkout, with no AWS account:
#
#   soci-indexer-VERSION-x86_64-unknown-linux-musl.tar.gz    the CLI, static (musl), with LICENSE and a README
#   soci-indexer-VERSION-aarch64-unknown-linux-musl.tar.gz   the same for 64-bit ARM
#   index-on-push-VERSION-arm64.zip                          the Lambda function: `bootstrap` (static,
#                                                            AArch64) at the root, executable
#   template.yaml                                            the SAM template, its CodeUri that zip (no
#                                                            build metadata): deploys with no Rust anywhere
#   SHA256SUMS                                               over the four above (`sha256sum -c SHA256SUMS`)
#
# VERSION is the CLI crate's version (on a v* tag in GitHub Actions, the tag must be vVERSION). Then it
# checks what it built: static ELF binaries for the right machines, the x86_64 CLI's --version (on an
# x86_64 host), the zip's layout, the template (cfn-lint, sam validate --lint) and the checksums.
#
# Reproducible where the toolchain allows: the commit's time is every archive entry's mtime
# (SOURCE_DATE_EPOCH), entries are sorted with fixed modes and owner 0, gzip stores no name or time, and
# the checkout's and cargo's paths are remapped out of the binaries. Checked: the x86_64 CLI built from
# two clones at different paths, into different target directories, is byte-identical, and so is its
# tar.gz (also under another umask). Not checked, and only as reproducible as the tools: the aarch64
# builds (the same flags), the zip (Python's zlib version decides its deflate bytes), gzip's output
# across gzip versions; a different rustc, zig or cargo-zigbuild gives different binaries (the log prints
# their versions), and so does a different Cargo.lock (--locked keeps it).
#
# Tools: cargo and rustup (the musl targets are added when missing); from PyPI, installed when missing
# with the python3 on PATH: cargo-zigbuild and ziglang (zig links the static binaries), cfn-lint and
# aws-sam-cli (the template checks). Options:
#
#   --allow-dirty   build even though tracked files have uncommitted changes (the commit printed by
#                   --version is then not what was built: never for a published release)
#   --skip-checks   leave out cfn-lint and sam validate (says so at the end)
#
# Environment: CARGO_TARGET_DIR (default: target/ of the workspace), DIST_DIR (default: dist/).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

die() { printf 'release: %s\n' "$*" >&2; exit 1; }
say() { printf '\n==> %s\n' "$*"; }
has_cmd() { command -v "$1" >/dev/null 2>&1; }

allow_dirty=0
skip_checks=0
for arg in "$@"; do
    case "$arg" in
        --allow-dirty) allow_dirty=1 ;;
        --skip-checks) skip_checks=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $arg (see infra/release.sh --help)" ;;
    esac
done

start=$(date +%s)
python=${PYTHON:-python3}
has_cmd "$python" || die "$python is missing: it runs zig (PyPI's ziglang) and the template checks"
has_cmd cargo || die "cargo is missing: install Rust with rustup (https://rustup.rs)"
has_cmd rustup || die "rustup is missing: the musl targets are added with it (https://rustup.rs)"
has_cmd git || die "git is missing: the version and commit come from the checkout"
PATH="$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH

# --- What is released -------------------------------------------------------------------------------

git rev-parse --git-dir >/dev/null 2>&1 || die "$root is not a git checkout: release from a clone"
commit=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    if [ "$allow_dirty" = 1 ]; then
        echo "release: warning: tracked files have uncommitted changes; --version will say $commit anyway" >&2
    else
        git status --short --untracked-files=no >&2
        die "tracked files have uncommitted changes: commit them, or release from a fresh clone (--allow-dirty to build anyway)"
    fi
fi
version=$(cargo metadata --format-version 1 --no-deps --locked | "$python" -c '
import json, sys
print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "soci-indexer"))')
[ -n "$version" ] || die "no version for the soci-indexer crate in cargo metadata"
if [ "${GITHUB_REF_TYPE:-}" = tag ] && [ "${GITHUB_REF_NAME:-}" != "v$version" ]; then
    die "the tag is ${GITHUB_REF_NAME:-?} but the CLI crate's version is $version: tag v$version, or bump crates' version"
fi
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct HEAD)
export SOURCE_DATE_EPOCH
# crates/cli/build.rs reads it for --version (a fresh checkout would give the same from git).
export SOCI_INDEXER_COMMIT=$commit

dist=${DIST_DIR:-$root/dist}
case "$dist" in /*) ;; *) dist=$root/$dist ;; esac
target_dir=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps --locked | "$python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')}
export CARGO_TARGET_DIR=$target_dir
cli_archive() { echo "soci-indexer-$version-$1"; }
zip_name=index-on-push-$version-arm64.zip
echo "release: soci-indexer $version, commit $commit ($(git log -1 --format=%cI HEAD)), into $dist"

# --- Tools ------------------------------------------------------------------------------------------

say "tools"
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    if ! rustup target list --installed | grep -qx "$target"; then
        echo "rustup target add $target"
        rustup target add "$target" || die "rustup target add $target failed"
    fi
done
wanted=()
has_cmd cargo-zigbuild || wanted+=("cargo-zigbuild>=0.19")
has_cmd zig || "$python" -c 'import ziglang' >/dev/null 2>&1 || wanted+=("ziglang>=0.13")
if [ "$skip_checks" = 0 ]; then
    has_cmd cfn-lint || wanted+=("cfn-lint>=1.51")
    has_cmd sam || wanted+=("aws-sam-cli>=1.170")
fi
if [ ${#wanted[@]} -gt 0 ]; then
    echo "pip install ${wanted[*]}"
    "$python" -m pip install --quiet --disable-pip-version-check --no-input "${wanted[@]}" \
        || die "pip install ${wanted[*]} failed: install them by hand (PyPI) and run again"
    if has_cmd pyenv; then pyenv rehash || true; fi
fi
has_cmd cargo-zigbuild || die "cargo-zigbuild is not on PATH after installing it (PATH=$PATH)"
zig_version=$( (has_cmd zig && zig version) || "$python" -m ziglang version) || die "zig does not run (PyPI's ziglang)"
echo "rustc $(rustc --version | cut -d' ' -f2-), $(cargo-zigbuild --version), zig $zig_version"

# --- Build ------------------------------------------------------------------------------------------

# Paths of this checkout and of cargo's registry are remapped out of the binaries (panic messages keep
# crate-relative paths), so two clones in different places build the same bytes. One argument per
# \x1f-separated field: no word splitting on paths with spaces.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
sep=$'\x1f'
export CARGO_ENCODED_RUSTFLAGS="--remap-path-prefix=$root=/soci-indexer$sep--remap-path-prefix=$cargo_home=/cargo"

say "cargo zigbuild --release --target x86_64-unknown-linux-musl -p soci-indexer"
build_start=$(date +%s)
cargo zigbuild --release --locked --target x86_64-unknown-linux-musl -p soci-indexer
echo "    $(($(date +%s) - build_start)) s"

# The CLI and the function share most of their crates: one build for both.
say "cargo zigbuild --release --target aarch64-unknown-linux-musl -p soci-indexer -p index-on-push"
build_start=$(date +%s)
cargo zigbuild --release --locked --target aarch64-unknown-linux-musl -p soci-indexer -p index-on-push
echo "    $(($(date +%s) - build_start)) s"

# --- Package ----------------------------------------------------------------------------------------

say "packaging into $dist"
rm -rf "$dist"
mkdir -p "$dist"
# dist/ is build output, never committed.
printf '*\n' >"$dist/.gitignore"
stage=$(mktemp -d "${TMPDIR:-/tmp}/soci-release.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# A deterministic tar.gz of directory $2 (under $1) as $3.
tar_gz() {
    (cd "$1" && find "$2" -print0 | LC_ALL=C sort -z \
        | tar --null --no-recursion -T - --format=gnu --owner=0 --group=0 --numeric-owner \
            --mtime="@$SOURCE_DATE_EPOCH" -cf -) | gzip -9n >"$3"
}

for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    name=$(cli_archive "$target")
    dir=$stage/$name
    mkdir -p "$dir"
    install -m 0755 "$target_dir/$target/release/soci-indexer" "$dir/soci-indexer"
    install -m 0644 LICENSE "$dir/LICENSE"
    cat >"$dir/README.md" <<EOF
# soci-indexer $version ($target)

Builds SOCI indexes (zTOCs byte-identical to soci-snapshotter's) so container images lazy-load on
AWS Fargate and soci-snapshotter. A static binary: copy it onto your PATH.

    install -m 0755 soci-indexer /usr/local/bin/
    soci-indexer --version
    aws ecr get-login-password | soci-indexer create \$REGISTRY/app:1.4 --username AWS --password-stdin
    aws ecr get-login-password | soci-indexer wait \$REGISTRY/app:1.4 --username AWS --password-stdin --timeout 10m

Built from commit $commit. Documentation, the Lambda that indexes every ECR push and its
SAM template: https://github.com/soci-indexer/soci-indexer (Apache-2.0, see LICENSE).
EOF
    chmod 0644 "$dir/README.md"
    chmod 0755 "$dir"
    tar_gz "$stage" "$name" "$dist/$name.tar.gz"
done

# The function's zip: one entry, bootstrap, mode 0755, dated at the commit (zip's epoch is 1980).
"$python" - "$target_dir/aarch64-unknown-linux-musl/release/index-on-push" "$dist/$zip_name" <<'EOF'
import os, sys, time, zipfile
source, out = sys.argv[1:]
stamp = time.gmtime(max(int(os.environ["SOURCE_DATE_EPOCH"]), 315532800))[:6]
info = zipfile.ZipInfo("bootstrap", date_time=stamp)
info.create_system = 3  # Unix: external_attr carries the mode
info.external_attr = (0o100755 & 0xFFFF) << 16
info.compress_type = zipfile.ZIP_DEFLATED
with open(source, "rb") as f, zipfile.ZipFile(out, "w") as z:
    z.writestr(info, f.read(), compresslevel=9)
EOF

# The template: the function's code is the zip next to it, no cargo-lambda build metadata (sam deploy
# would otherwise want `sam build` first), the SAR metadata's version is the release's, and its
# LicenseUrl and ReadmeUrl are gone (the two files would have to sit next to the template). Exact edits,
# each must match once: a template that changed shape fails here, not in someone's account.
"$python" - template.yaml "$dist/template.yaml" "$zip_name" "$version" <<'EOF'
import re, sys
source, out, zip_name, version = sys.argv[1:]
text = open(source).read()
edits = [
    # (what, pattern, replacement)
    ("the function's build metadata",
     r"(\n  IndexOnPushFunction:\n    Type: AWS::Serverless::Function\n    Metadata:\n)"
     r"      BuildMethod: rust-cargolambda\n      BuildProperties:\n        Binary: index-on-push\n", r"\1"),
    ("the function's CodeUri", r"\n      CodeUri: \.\n", f"\n      CodeUri: {zip_name}\n"),
    ("the SAR SemanticVersion", r"\n    SemanticVersion: [0-9A-Za-z.+-]+\n", f"\n    SemanticVersion: {version}\n"),
    # `sam deploy` and `aws cloudformation package` upload these files, which are not in the release:
    # the SAR publish (release.yml) puts them back next to LICENSE and README.md.
    ("the SAR LicenseUrl", r"\n    LicenseUrl: LICENSE\n", "\n"),
    ("the SAR ReadmeUrl", r"\n    ReadmeUrl: README.md\n", "\n"),
]
for what, pattern, replacement in edits:
    text, count = re.subn(pattern, replacement, text)
    if count != 1:
        sys.exit(f"release: template.yaml: {what} matched {count} times, not once: update infra/release.sh")
text = text.replace("\nMetadata:\n", "\n# Generated by infra/release.sh from the repository's template.yaml: the function's code is\n"
                    f"# {zip_name}, next to this file.\nMetadata:\n", 1)
open(out, "w").write(text)
EOF

(cd "$dist" && sha256sum -- *.tar.gz "$zip_name" template.yaml >SHA256SUMS)

# --- Checks -----------------------------------------------------------------------------------------

say "checking the artifacts"
# Each binary: ELF64 little-endian for the expected machine, with no program interpreter (static).
check_elf() {
    "$python" - "$1" "$2" <<'EOF'
import struct, sys
path, machine = sys.argv[1], {"x86_64": 62, "aarch64": 183}[sys.argv[2]]
data = open(path, "rb").read()
assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path}: not a 64-bit little-endian ELF"
e_machine = struct.unpack_from("<H", data, 18)[0]
assert e_machine == machine, f"{path}: machine {e_machine}, expected {machine} ({sys.argv[2]})"
phoff, = struct.unpack_from("<Q", data, 32)
phentsize, phnum = struct.unpack_from("<HH", data, 54)
types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
assert 3 not in types, f"{path}: has a program interpreter (PT_INTERP): dynamically linked, not static"
print(f"    {path.split('/')[-1]}: static ELF {sys.argv[2]}, {len(data) / 1e6:.1f} MB")
EOF
}
check_dir=$stage/check
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    name=$(cli_archive "$target")
    mkdir -p "$check_dir"
    tar -xzf "$dist/$name.tar.gz" -C "$check_dir"
    listing=$(cd "$check_dir/$name" && ls -A | tr '\n' ' ')
    [ "$listing" = "LICENSE README.md soci-indexer " ] || die "$name.tar.gz holds '$listing', not LICENSE README.md soci-indexer"
    check_elf "$check_dir/$name/soci-indexer" "${target%%-*}" || die "$name.tar.gz: the binary is not a static ${target%%-*} ELF"
done
"$python" - "$dist/$zip_name" "$check_dir/bootstrap" <<'EOF' || die "$zip_name is not a zip with an executable bootstrap at its root"
import stat, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = z.namelist()
    assert names == ["bootstrap"], f"entries {names}, expected just bootstrap"
    mode = z.getinfo("bootstrap").external_attr >> 16
    assert stat.S_ISREG(mode) and mode & 0o111 == 0o111, f"bootstrap mode {oct(mode)}, not executable"
    open(sys.argv[2], "wb").write(z.read("bootstrap"))
print(f"    {sys.argv[1].split('/')[-1]}: bootstrap at the root, mode {oct(mode & 0o7777)}")
EOF
check_elf "$check_dir/bootstrap" aarch64 || die "$zip_name: bootstrap is not a static AArch64 ELF"

if [ "$(uname -m)" = x86_64 ]; then
    binary=$check_dir/$(cli_archive x86_64-unknown-linux-musl)/soci-indexer
    printed=$("$binary" --version) || die "the x86_64 binary does not run: $binary --version failed"
    echo "    soci-indexer --version: $printed"
    case "$printed" in
        *"$version"*"${commit:0:12}"*) ;;
        *) die "soci-indexer --version printed '$printed', without version $version and commit ${commit:0:12}" ;;
    esac
else
    echo "    not an x86_64 host ($(uname -m)): the x86_64 binary's --version is not run here"
fi

"$python" - "$dist/template.yaml" "$zip_name" <<'EOF' || die "dist/template.yaml is not what the release needs"
import sys
from cfnlint.decode import decode
template, matches = decode(sys.argv[1])
assert template is not None, f"does not parse: {matches}"
function = template["Resources"]["IndexOnPushFunction"]
assert function["Properties"]["CodeUri"] == sys.argv[2], function["Properties"]["CodeUri"]
assert "BuildMethod" not in function.get("Metadata", {}), "build metadata left"
sar = template["Metadata"]["AWS::ServerlessRepo::Application"]
assert "LicenseUrl" not in sar and "ReadmeUrl" not in sar, "LicenseUrl or ReadmeUrl left: sam deploy would want the files"
print(f"    template.yaml: CodeUri {sys.argv[2]}, no build metadata")
EOF
if [ "$skip_checks" = 0 ]; then
    AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} SAM_CLI_TELEMETRY=0 cfn-lint "$dist/template.yaml" \
        || die "cfn-lint found problems in dist/template.yaml"
    echo "    cfn-lint dist/template.yaml: clean"
    (unset AWS_PROFILE; AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} SAM_CLI_TELEMETRY=0 \
        sam validate --lint --template "$dist/template.yaml" >/dev/null) \
        || die "sam validate --lint failed on dist/template.yaml"
    echo "    sam validate --lint dist/template.yaml: clean"
fi
(cd "$dist" && sha256sum --quiet -c SHA256SUMS) || die "SHA256SUMS does not match the files in $dist"
echo "    sha256sum -c SHA256SUMS: OK"

say "dist/ ($(($(date +%s) - start)) s)"
(cd "$dist" && ls -l -- *.tar.gz "$zip_name" template.yaml SHA256SUMS | awk '{ printf "    %10d  %s\n", $5, $9 }')
cat "$dist/SHA256SUMS" | sed 's/^/    /'
[ "$skip_checks" = 0 ] || echo "release: --skip-checks: cfn-lint and sam validate were NOT run on dist/template.yaml" >&2
