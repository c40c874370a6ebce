"""Where a model runs and in which dtype: ``auto`` rules, names, and the model's input device.

- :func:`resolve_device`: ``"auto"`` is CUDA when available, then Apple MPS, else CPU; any device
  string torch understands (``cpu``, ``cuda``, ``cuda:1``, ``mps``) or a ``torch.device`` is accepted,
  and a device that does not exist on this machine is refused in one line.
- :func:`resolve_dtype`: ``"auto"`` is bfloat16 on a GPU that supports it (float16 on one that does
  not, float32 on MPS), float32 on CPU; names ``bfloat16``/``bf16``, ``float16``/``fp16``/``half``,
  ``float32``/``fp32``/``float`` and a ``torch.dtype`` are accepted.
- :func:`native_bf16`: whether bf16 matmuls run in hardware on a device (a CUDA GPU that supports
  them; a CPU with AVX512-BF16 or AMX). Elsewhere bf16 is emulated and far slower than float32, so
  ``auto`` precision settings choose float32 there.
- :func:`input_device`: the device of a model's token embedding, where ``input_ids`` must go (for a
  model sharded with a ``device_map`` this is the first shard, not ``next(model.parameters())``).

>>> resolve_device("cpu")
device(type='cpu')
>>> resolve_dtype("bf16", "cpu")
torch.bfloat16
>>> resolve_dtype("auto", "cpu")
torch.float32
"""
from __future__ import annotations

import functools
import os

import torch

from ..errors import ProbelabError

DTYPE_NAMES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` → cuda / mps / cpu (first available); otherwise the named device, checked to exist."""
    if isinstance(spec, torch.device):
        device = spec
    else:
        name = "auto" if spec is None else str(spec).strip().lower()
        if name in ("", "auto"):
            if torch.cuda.is_available():
                return torch.device("cuda")
            if _mps_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError):
            raise ProbelabError(
                f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ProbelabError(f"device {spec!s} asked for, but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ProbelabError(
                f"device {spec!s} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not _mps_available():
            raise ProbelabError(f"device {spec!s} asked for, but MPS is not available on this machine")
    elif device.type not in ("cpu", "meta"):
        raise ProbelabError(f"unsupported device {spec!s}; use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(spec: str | torch.dtype | None = "auto",
                  device: str | torch.device | None = None) -> torch.dtype:
    """``"auto"`` → bfloat16 on a GPU that supports it, else float32; names and ``torch.dtype`` accepted.

    ``device`` is only read for ``"auto"`` (default: :func:`resolve_device` ``("auto")``).
    """
    if isinstance(spec, torch.dtype):
        if spec not in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
            raise ProbelabError(f"unsupported model dtype {spec}; use bfloat16, float16 or float32")
        return spec
    name = "auto" if spec is None else str(spec).strip().lower().removeprefix("torch.")
    if name in ("", "auto"):
        dev = resolve_device(device if device is not None else "auto")
        if dev.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # cpu (bf16 matmuls are slower than fp32 on many CPUs), mps
    if name not in DTYPE_NAMES:
        raise ProbelabError(f"unknown dtype {spec!r}; use auto, bfloat16 (bf16), float16 (fp16) or float32 (fp32)")
    return DTYPE_NAMES[name]


_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo(field: str) -> str | None:
    """The first ``field : value`` of Linux's /proc/cpuinfo (None elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    return frozenset((_cpuinfo("flags") or "").split())


def cpu_model() -> str:
    """The CPU's model name (``AMD EPYC``, ...), or what :mod:`platform` knows."""
    import platform

    return _cpuinfo("model name") or platform.processor() or platform.machine()


def native_bf16(device: str | torch.device | None = None) -> bool:
    """True where bf16 matmuls run in hardware: a CUDA GPU that supports bf16, a CPU with AVX512-BF16 or
    AMX (Linux flags; on other systems an arm64 CPU is assumed to have it, an x86 CPU not)."""
    dev = resolve_device(device if device is not None else "auto")
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if dev.type != "cpu":
        return False
    flags = _cpu_flags()
    if flags:
        return any(f in flags for f in _CPU_BF16_FLAGS)
    import platform

    return platform.machine().lower() in ("arm64", "aarch64")


def use_bf16(setting, device: str | torch.device | None = None) -> bool:
    """A bf16 switch of a config: ``True``/``False`` as given, ``"auto"`` = :func:`native_bf16`."""
    from ..flags import bf16_flag

    flag = bf16_flag(setting)
    return native_bf16(device) if flag is None else flag


ENV_DEVICE, ENV_DTYPE = "PROBELAB_DEVICE", "PROBELAB_DTYPE"


def env_device() -> str:
    """``$PROBELAB_DEVICE`` or ``"auto"``: what the app (a separate server process) loads models on."""
    return os.environ.get(ENV_DEVICE, "").strip() or "auto"


def env_dtype() -> str:
    """``$PROBELAB_DTYPE`` or ``"auto"``."""
    return os.environ.get(ENV_DTYPE, "").strip() or "auto"


def input_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's input embedding (where token ids go), for sharded models too."""
    get = getattr(model, "get_input_embeddings", None)
    emb = None
    if get is not None:
        try:
            emb = get()
        except (NotImplementedError, AttributeError):
            emb = None
    if emb is not None:
        weight = getattr(emb, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.device.type != "meta":
            return weight.device
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's floating-point weights (the first floating parameter's)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


__all__ = ["resolve_device", "resolve_dtype", "input_device", "model_dtype", "DTYPE_NAMES", "env_device", "env_dtype"]
