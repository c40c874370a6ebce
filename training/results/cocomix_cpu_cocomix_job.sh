#!/usr/bin/env bash
# The CoCoMix half of training/results/run_cocomix_cpu.sh as one job (run it under the heavy lock):
# teacher SAE (the default one if it is already cached, otherwise a smaller SAE trained with
# probelab.sae.train's defaults but fewer tokens), then labels + CoCoMix training.
set -euo pipefail
PY=${PY:-.venv/bin/python}
CFG=training/configs/cocomix_cpu.yaml
SAE=default
if [ ! -f "$($PY -c "from probelab.sae.train import default_sae_path; print(default_sae_path())")/cfg.json" ]; then
  SAE=runs/cocomix_cpu/teacher_sae
  if [ ! -f "$SAE/cfg.json" ]; then
    echo "default SAE not cached: training a smaller one into $SAE"
    $PY -c "
from probelab.sae.train import SAETrainConfig, train_sae
train_sae(SAETrainConfig(cache_tokens=40_000, training_tokens=320_000, n_eval_texts=40), '$SAE', progress=False)"
  fi
fi
echo "teacher SAE: $SAE"
$PY -m probelab.train --config $CFG --set teacher.sae=$SAE --set teacher.n_concepts=null
$PY bench/cocomix_step.py --config $CFG --sae $SAE 2>&1 | grep -v Warn | tee runs/cocomix_cpu/bench.txt
