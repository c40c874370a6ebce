#!/usr/bin/env bash
# The prepared GPU check: everything probelab claims about CUDA, in one run of under 8 minutes on a
# machine with one or more NVIDIA GPUs, ending in one table.
#
#   bash bench/gpu_check.sh              # on the GPU machine (from the repository root)
#   bash bench/gpu_check.sh --dry-run    # the CPU-only part, CI-size (tests/test_device_gpu_check.py)
#
# Steps (each with its own time limit; a failed step is reported in the table, the rest still run):
#   1. tests      the device tests with their CUDA parametrisations (tests/test_device*.py)
#   2. capture    bench/capture.py on CUDA: probelab vs a bare HF forward and TransformerBridge batched, bf16
#   3. train-step bench/train_step.py on CUDA: Control LLM vs full vs partial fine-tune, bf16 autocast, FLOP ratio
#   4. attribution bench/attribution.py (SAE attribution labelling; the bench itself runs on the CPU)
#   5. fsdp       accelerate launch (FSDP, bf16) of the smallest training config, 1 or 2 processes
# Outputs: $GPU_CHECK_OUT (default: a fresh folder under /tmp) holds each step's log and JSON.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${GPU_CHECK_OUT:-$(mktemp -d /tmp/probelab-gpu-check.XXXXXX)}
mkdir -p "$OUT"
export TOKENIZERS_PARALLELISM=false
ROWS=()

run_step() {  # name limit_seconds summary_command -- command...
  local name=$1 limit=$2 summary=$3
  shift 4
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$? dt=$((SECONDS - t0))
  local status=ok
  [ $rc -eq 124 ] && status="timeout (${limit}s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && status="FAILED rc=$rc"
  local what
  what=$(eval "$summary" 2>/dev/null | tr '\n' ' ' | cut -c1-150)
  ROWS+=("$(printf '%-12s %-18s %5ss  %s' "$name" "$status" "$dt" "$what")")
}

if [ $DRY -eq 0 ]; then
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to torch ($("$PY" -c 'import torch; print(torch.__version__)')); use --dry-run" >&2
    exit 2
  fi
  NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
  GPU=$("$PY" -c "import torch; p=torch.cuda.get_device_properties(0); print(f'{p.name}, {p.total_memory/2**30:.0f} GiB')")
  DEV=cuda
  echo "gpu_check: $NGPU x $GPU; torch $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'); out $OUT"
  run_step tests 150 "tail -1 $OUT/tests.log" -- \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_device.py -k "cuda or device_map or auto_device_map"
  run_step capture 120 "grep -E '^probelab / |^bf16 probelab / bf16 bare HF \\(logits|^layers=' $OUT/capture.log" -- \
    "$PY" bench/capture.py --device cuda --dtype bfloat16 --repeats 10 --no-cold-load --json "$OUT/capture.json"
  run_step train-step 150 "grep -E '^tok/s control / |^FLOPs full / control|^peak mem control / full ' $OUT/train-step.log" -- \
    "$PY" bench/train_step.py --device cuda --methods control,full,partial --rounds 1 --steps 5 --warmup 2 \
      --batch 8 --seq 256 --threads 4
  run_step attribution 120 "grep -iE 'tok/s|ceiling' $OUT/attribution.log | tail -3" -- \
    "$PY" bench/attribution.py --texts 8 --threads 8
  NPROC=$(( NGPU >= 2 ? 2 : 1 ))
  run_step fsdp 120 "grep -iE 'step|final|saved' $OUT/fsdp.log | tail -2" -- \
    "$PY" -m accelerate.commands.launch --config_file training/accelerate/fsdp.yaml --num_processes "$NPROC" \
      -m probelab.train.csft --config training/configs/tiny-test.yaml \
      --set "run.out_dir=$OUT/fsdp-run" --set train.precision=bf16
else
  DEV=cpu
  echo "gpu_check --dry-run: the CPU-only part; out $OUT"
  run_step tests 240 "tail -1 $OUT/tests.log" -- \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_device.py -k "dtype_names or bad_ or auto_rules or mean_keep"
  run_step capture 240 "grep -E '^probelab / |^bf16 probelab / bf16 bare HF \\(logits|^layers=' $OUT/capture.log" -- \
    "$PY" bench/capture.py --device cpu --model tiny-llama --texts 8 --repeats 1 --no-tl --no-cold-load \
      --json "$OUT/capture.json"
  run_step train-step 60 "echo flags parsed" -- "$PY" bench/train_step.py --help
  run_step attribution 60 "echo flags parsed" -- "$PY" bench/attribution.py --help
  run_step fsdp 60 "echo config and launcher found" -- "$PY" -c "
import sys, yaml
from accelerate.commands.launch import launch_command_parser
cfg = yaml.safe_load(open('training/accelerate/fsdp.yaml'))
assert cfg['distributed_type'] == 'FSDP', cfg
launch_command_parser().parse_args(['--config_file', 'training/accelerate/fsdp.yaml', '--num_processes', '1',
                                    '-m', 'probelab.train.csft', '--config', 'training/configs/tiny-test.yaml'])
yaml.safe_load(open('training/configs/tiny-test.yaml'))
"
fi

echo
echo "probelab GPU check ($DEV$([ $DRY -eq 1 ] && echo ', dry run'))"
printf '%-12s %-18s %6s  %s\n' step status time result
for r in "${ROWS[@]}"; do echo "$r"; done
echo "logs: $OUT"
fails=$(printf '%s\n' "${ROWS[@]}" | grep -cE 'FAILED|timeout')
exit $(( fails > 0 ? 1 : 0 ))
