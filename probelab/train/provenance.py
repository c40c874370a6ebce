"""What a results header names: the machine and the commit that made it."""
from __future__ import annotations

import os
import subprocess

# train.precision (a config's, or Accelerate's resolved one) -> how a results header says it
PRECISION = {"no": "fp32", "bf16": "bf16 autocast", "auto": "precision auto (bf16 where native, else fp32)"}


def machine(threads: int | None = None) -> str:
    """``CPU model, N cores, T threads per run`` (or the GPUs) of this machine, for a results header.
    ``threads``: the threads each run had (default ``$PROBELAB_THREADS``, else 2)."""
    import torch

    from ..models.devices import cpu_model

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"{cpu_model()}, {os.cpu_count()} cores, {threads or os.environ.get('PROBELAB_THREADS', '2')} threads per run"


def git_commit() -> str:
    """The short hash of the checkout's HEAD, or ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"
