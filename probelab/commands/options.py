"""Options that several commands share, defined once so they read the same everywhere.

This module imports only typer: command modules must stay importable without torch or
transformers (``probelab --help`` never loads them). Resolve the values inside the command:
``probelab.models.devices.resolve_device`` / ``resolve_dtype`` turn ``auto`` into a real device
and dtype.
"""
from __future__ import annotations

import typer


def device_option() -> str:
    return typer.Option(
        "auto", "--device", envvar="PROBELAB_DEVICE",
        help="where the model runs: auto (CUDA, then MPS, else CPU), cpu, cuda, cuda:1, mps, ...")


def dtype_option() -> str:
    return typer.Option(
        "auto", "--dtype", envvar="PROBELAB_DTYPE",
        help="model weights dtype: auto (bfloat16 on a GPU that supports it, else float32), "
             "bfloat16, float16 or float32")


def overwrite_option() -> bool:
    return typer.Option(
        False, "--overwrite",
        help="replace an existing --out folder (only folders probelab wrote are ever replaced without it)")


def allow_network_option() -> bool:
    return typer.Option(False, "--allow-network", help="allow downloading a hub model (or a pretrained SAE)")
