"""bench/gpu_check.sh: its CPU-only part (--dry-run) runs and prints the one table; the GPU part refuses
to start without CUDA."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def run(*args, tmp_path):
    env = {**os.environ, "GPU_CHECK_OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_dry_run_prints_the_table(tmp_path):
    proc = run("--dry-run", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("probelab GPU check"):]
    for step in ("tests", "capture", "train-step", "attribution", "fsdp"):
        assert any(line.startswith(step) and " ok " in line for line in table.splitlines()), table
    assert "probelab / bare HF forward" in (tmp_path / "out" / "capture.log").read_text()
    assert (tmp_path / "out" / "capture.json").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_run_without_cuda_says_so(tmp_path):
    proc = run(tmp_path=tmp_path)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
