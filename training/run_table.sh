#!/usr/bin/env bash
# Reproduce training/results/cpu-small.{md,csv} (the former entry; training/run_table.py does the work):
# the base model, then every method with the same data, steps and optimizer, for each seed.
#   bash training/run_table.sh                         # all methods, seed 0
#   bash training/run_table.sh full lerp-mse           # a subset (names in training/run_table.py)
#   CFG=cpu-long ROOT=runs/cpu-long NAME=cpu-long SEEDS="0 1 2" bash training/run_table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
args=(--config "${CFG:-cpu-small}" --root "${ROOT:-runs/cpu-small}" --name "${NAME:-cpu-small}"
      --seeds ${SEEDS:-0} --lock "${LOCK:-/tmp/probelab-heavy.lock}")
[ $# -gt 0 ] && args+=(--methods "$@")
exec "$PY" training/run_table.py "${args[@]}"
