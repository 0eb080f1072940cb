#!/usr/bin/env bash
# The project's test command: formatting, lints, then every test of the workspace.
# Run from anywhere; CI (.ci/run) runs exactly this after installing what a fresh machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> cargo test --workspace"
cargo test --workspace --locked
