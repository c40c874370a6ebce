"""Switches read from configs and the command line, without importing torch.

A bf16 switch is ``true``/``false`` or ``auto`` (bf16 only where it is native; see
:func:`probelab.models.devices.native_bf16`). YAML gives booleans; the command line and
environment give strings, spelled any of the ways below.
"""
from __future__ import annotations

from .errors import ProbelabError

BF16_WORDS = {"auto": None, "true": True, "yes": True, "1": True, "bf16": True,
              "false": False, "no": False, "0": False, "": False}


def bf16_flag(setting) -> bool | None:
    """``True``/``False`` as given, ``None`` for ``auto``; :class:`ProbelabError` for anything else."""
    if isinstance(setting, str):
        word = setting.strip().lower()
        if word not in BF16_WORDS:
            raise ProbelabError(f"a bf16 setting must be true, false or auto, got {setting!r}")
        return BF16_WORDS[word]
    return bool(setting)
