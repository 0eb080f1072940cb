#!/usr/bin/env bash
# The time-versus-size curve: `soci-indexer create` (bench profile: release optimisation, --no-ztoc-cache)
# of generated images from 250 MB to 8 GB compressed against a local docker-registry, on one core and on
# both; writes docs/bench-curve.csv and plots it to docs/bench-curve.svg. Not part of CI: it needs about
# 9 GB of free disk for a few minutes (the layers are deleted as soon as they are pushed, the registry's
# storage at the end) and takes about ten minutes on two cores.
# SOCI_CURVE_MAX_GB=2 stops at a smaller image.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench -p soci-indexer --bench curve
python3 infra/plot-curve.py docs/bench-curve.csv docs/bench-curve.svg
echo "wrote docs/bench-curve.csv and docs/bench-curve.svg"
