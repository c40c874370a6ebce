#!/usr/bin/env bash
# Reproduce training/results/cocomix.md: CoCoMix vs width-matched NTP on the CPU config.
# Run from the repository root. On a shared 2-core CPU each heavy step runs under the heavy-job lock.
set -euo pipefail
PY=${PY:-.venv/bin/python}
CFG=training/configs/cocomix_cpu.yaml
LOCK="flock /tmp/probelab-heavy.lock"
$LOCK $PY -m probelab.train --config $CFG --set method.name=ntp
$LOCK training/results/cocomix_cpu_cocomix_job.sh     # teacher SAE, labels (cached), CoCoMix run, bench
$PY training/cocomix_compare.py runs/cocomix_cpu/cocomix runs/cocomix_cpu/ntp --csv training/results/cocomix_cpu.csv
