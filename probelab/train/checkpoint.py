"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder ``<out>/checkpoints/step-000100/`` holds

- ``trainable.safetensors``: the trained parameters only (frozen ones come from the base model),
- ``optimizer.safetensors``: AdamW state per parameter (``<name>::exp_avg`` ...),
- ``rng.safetensors``: torch RNG states,
- ``state.json``: step, config identity and fingerprint, optimizer hyper-parameters, Python RNG.

Folders are written with :func:`probelab.paths.atomic_dir` and ``checkpoints/latest`` (a text
file naming the newest folder) is replaced atomically after it, so a kill at any moment leaves
the previous checkpoint usable. Every checkpoint records the ``run_id`` of the run that wrote it;
pruning deletes only that run's older checkpoints, never another run's. A checkpoint is written
only when every trained tensor is finite. State dicts go through ``torch.distributed.checkpoint.state_dict``
so plain, DDP and FSDP models are saved with the same canonical parameter names.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from ..errors import ProbelabError
from ..paths import atomic_dir, atomic_write_text

SEP = "::"
FORMAT = 1


class CheckpointError(ProbelabError):
    """A missing, corrupt or incompatible checkpoint."""


def _options(distributed: bool) -> StateDictOptions:
    return StateDictOptions(full_state_dict=True, cpu_offload=distributed)


def gather(model, optimizer, distributed: bool = False) -> tuple[dict, dict, list]:
    """Full (unsharded) trainable parameters, flat optimizer tensors, and param-group settings."""
    opts = _options(distributed)
    osd = get_optimizer_state_dict(model, optimizer, options=opts)
    msd = get_model_state_dict(model, options=opts)
    if "param_groups" not in osd:  # full state dicts with cpu_offload live on rank 0 only
        return {}, {}, []
    names = [n for g in osd["param_groups"] for n in g["params"]]
    params = {n: msd[n].detach().to("cpu", copy=True).contiguous() for n in names}
    flat = {f"{n}{SEP}{k}": torch.as_tensor(v).detach().to("cpu", copy=True).contiguous()
            for n, st in osd["state"].items() for k, v in st.items()}
    # the LR scheduler's initial_lr is not optimizer state: the schedule is rebuilt from the config on resume
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "initial_lr"}
              for g in osd["param_groups"]]
    return params, flat, groups


def first_nonfinite(tensors) -> str | None:
    """The name of the first floating-point tensor with a NaN or inf among ``(name, tensor)`` pairs."""
    for name, t in tensors:
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


class NonFiniteError(ProbelabError):
    """A trained tensor became NaN or inf: nothing is saved from that state."""


def save_checkpoint(ckpt_root: Path, step: int, model, optimizer, extra: dict, is_main: bool = True,
                    distributed: bool = False, keep: int = 2) -> Path | None:
    """Write ``ckpt_root/step-{step:06d}`` atomically (main process) and point ``latest`` at it.

    ``extra`` goes into state.json; its ``run_id`` decides which older checkpoints pruning may
    delete (this run's, beyond the newest ``keep``). Refuses (:class:`NonFiniteError`) when a
    trained parameter or optimizer tensor is not finite, so ``latest`` always names a usable state.
    """
    params, flat, groups = gather(model, optimizer, distributed)  # collective under FSDP: all ranks
    if not is_main:
        return None
    bad = first_nonfinite(params.items()) or first_nonfinite(flat.items())
    if bad:
        raise NonFiniteError(f"step {step}: {bad} is not finite (nan or inf); no checkpoint written, "
                             f"the last good one is {Path(ckpt_root) / 'latest'}")
    target = Path(ckpt_root) / f"step-{step:06d}"
    with atomic_dir(target, overwrite=True, kind="checkpoint") as tmp:  # a same-step folder left by a killed attempt of this run
        save_file(params, str(tmp / "trainable.safetensors"))
        save_file(flat, str(tmp / "optimizer.safetensors"))
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"cuda_{i}"] = s
        save_file(rng, str(tmp / "rng.safetensors"))
        state = {"format": FORMAT, "step": step, "param_groups": groups,
                 "python_random": _jsonable(random.getstate()), **extra}
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
    atomic_write_text(Path(ckpt_root) / "latest", target.name + "\n")
    _prune(Path(ckpt_root), keep, extra.get("run_id"), step)
    return target


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def _run_of(folder: Path) -> str | None:
    try:
        return json.loads((folder / "state.json").read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def _prune(root: Path, keep: int, run_id: str | None, step: int) -> None:
    """Delete this run's checkpoints except the newest ``keep`` up to ``step``; its checkpoints past
    ``step`` (written by an attempt that was killed before ``latest`` moved) are stale and go too.
    Checkpoints of other runs are never touched."""
    if keep <= 0 or run_id is None:
        return
    mine = []
    for folder in root.glob("step-*"):
        if folder.is_dir() and _run_of(folder) == run_id:
            try:
                mine.append((int(folder.name.split("-", 1)[1]), folder))
            except ValueError:
                continue
    mine.sort()
    upto = [f for s, f in mine if s <= step]
    stale = [f for s, f in mine if s > step]
    for old in upto[:-keep] + stale:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The folder ``latest`` names, or None when there is no checkpoint yet."""
    pointer = Path(ckpt_root) / "latest"
    if not pointer.is_file():
        return None
    folder = Path(ckpt_root) / pointer.read_text().strip()
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder} named by {pointer} is missing")
    return folder


def read_state(folder: Path) -> dict:
    try:
        state = json.loads((Path(folder) / "state.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"corrupt checkpoint {folder}: state.json is missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"corrupt checkpoint {folder}: state.json is not valid JSON ({e.msg})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "step" not in state:
        raise CheckpointError(f"corrupt checkpoint {folder}: state.json lacks format/step")
    return state


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"corrupt checkpoint {path.parent}: {path.name} is missing") from None
    except Exception as e:  # safetensors raises several error types on damaged files
        raise CheckpointError(f"corrupt checkpoint {path.parent}: {path.name}: {str(e).splitlines()[0]}") from None


def load_checkpoint(folder: Path, model, optimizer, distributed: bool = False) -> dict:
    """Restore trainable parameters, optimizer state and RNG from ``folder``; return state.json."""
    folder = Path(folder)
    state = read_state(folder)
    params = _load_tensors(folder / "trainable.safetensors")
    flat = _load_tensors(folder / "optimizer.safetensors")
    rng = _load_tensors(folder / "rng.safetensors")
    names = [n for g in state["param_groups"] for n in g["params"]]
    expected = [n for g in get_optimizer_state_dict(model, optimizer)["param_groups"] for n in g["params"]]
    if sorted(names) != sorted(expected) or set(params) != set(names):
        raise CheckpointError(f"checkpoint {folder} trains different parameters than this config "
                              f"({len(names)} saved vs {len(expected)} now)")
    opt_state: dict[str, dict] = {}
    for key, t in flat.items():
        name, _, sub = key.partition(SEP)
        opt_state.setdefault(name, {})[sub] = t
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items() if k != "initial_lr"}
              for g in state["param_groups"]]
    opts = StateDictOptions(full_state_dict=True, strict=False, cpu_offload=distributed)
    try:
        set_model_state_dict(model, params, options=opts)
        set_optimizer_state_dict(model, optimizer, {"state": opt_state, "param_groups": groups}, options=opts)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"cannot restore checkpoint {folder}: {str(e).splitlines()[0]}") from None
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda_"))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    random.setstate(_tuples(state["python_random"]))
    return state
