#!/usr/bin/env bash
# Reproduce training/results/cpu-small.{md,csv}: the base model once, then every method with the
# same data, steps and optimizer (training/configs/cpu-small.yaml), one after the other, under
# the shared heavy-job lock. Final checkpoints: runs/cpu-small/<method>/final.
#   bash training/run_table.sh            # all methods
#   bash training/run_table.sh full lerp-mse   # a subset (names below)
#   CFG=training/configs/cpu-long.yaml ROOT=runs/cpu-long NAME=cpu-long bash training/run_table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CFG=${CFG:-training/configs/cpu-small.yaml}
ROOT=${ROOT:-runs/cpu-small}
NAME=${NAME:-cpu-small}  # training/results/<NAME>.{md,csv}
LOCK=${LOCK:-/tmp/probelab-heavy.lock}
# Take the shared heavy-job lock once for the whole table (the runs are sequential anyway).
if [ -z "${PROBELAB_LOCK_HELD:-}" ]; then
  exec flock "$LOCK" env PROBELAB_LOCK_HELD=1 bash "$0" "$@"
fi

declare -A METHOD=(
  [base]="method.name=full train.steps=0 eval.at_start=true"
  [full]="method.name=full"
  [partial]="method.name=partial method.every=5"
  [stack]="method.name=stack method.num_expanded=6"
  [hybrid]="method.name=hybrid method.num_expanded=6 method.interpolation=lerp method.divergence=mse"
  [lerp-mse]="method.name=control method.interpolation=lerp method.divergence=mse"
  [lerp]="method.name=control method.interpolation=lerp method.divergence=none"
  [dlerp]="method.name=control method.interpolation=dlerp method.divergence=none"
)
ORDER=(base full lerp-mse lerp dlerp partial stack hybrid)  # most informative first
[ $# -gt 0 ] && ORDER=("$@")

for name in "${ORDER[@]}"; do
  sets=()
  for kv in ${METHOD[$name]}; do sets+=(--set "$kv"); done
  mkdir -p "$ROOT/$name"
  echo "== $name: $(date -u +%H:%M:%S)"
  "$PY" training/train_csft.py --config "$CFG" --set "run.out_dir=$ROOT/$name" "${sets[@]}" \
    > "$ROOT/$name/log.txt" 2>&1 || { echo "$name failed: see $ROOT/$name/log.txt"; continue; }
  grep -E '^\[(eval|train)\]' "$ROOT/$name/log.txt" | tail -3
done
"$PY" training/make_table.py --root "$ROOT" --out training/results --name "$NAME"
