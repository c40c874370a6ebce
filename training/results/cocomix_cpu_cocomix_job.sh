#!/usr/bin/env bash
# The CoCoMix half of training/results/run_cocomix_cpu.sh as one job (run it under the heavy lock):
# labels + CoCoMix training with the default SAE, which must already be trained (`probelab sae train`).
# It refuses to run without it: the results must come from the SAE they name.
set -euo pipefail
PY=${PY:-.venv/bin/python}
CFG=training/configs/cocomix_cpu.yaml
SAE=$($PY -c "from probelab.sae.train import default_sae_path; print(default_sae_path())")
if [ ! -f "$SAE/cfg.json" ]; then
  echo "error: the default SAE is not trained ($SAE); run \`probelab sae train\` first" >&2
  exit 1
fi
$PY training/cocomix_table.py --sae "$SAE" --dry-run | head -1    # the SAE's path, weight hash, EV, L0, dead
$PY -m probelab.train --config $CFG --set teacher.sae="$SAE" --set teacher.n_concepts=null
$PY bench/cocomix_step.py --config $CFG --sae "$SAE" 2>&1 | grep -v Warn | tee runs/cocomix_cpu/bench.txt
