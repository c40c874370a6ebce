"""What both training loops share around the loop: command line, the run folder's rules, threads,
the finite-weights guard, and how errors end the process.

The run folder (``run.out_dir``) belongs to one run. A new run starts only in a missing or empty
folder; ``run.resume`` decides what happens when it is not empty:

- ``auto`` (default): continue from ``checkpoints/latest`` when its config identity matches;
  a folder whose run was killed before its first checkpoint (same config) starts again; anything
  else is refused.
- ``never``: refuse a non-empty folder.
- ``must``: refuse to start without a checkpoint.

``--start-over`` (or :func:`open_run` with ``start_over=True``) first moves an existing non-empty
folder aside to ``<out_dir>.old-<UTC time>``: two runs are never mixed in one folder, nothing is deleted.
A run whose checkpoint already reached ``train.steps`` and whose ``final/`` model exists is finished:
running it again prints ``already finished at step N`` and changes nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import ProbelabError
from .checkpoint import CheckpointError, latest_checkpoint, read_state


class RunFolderError(ProbelabError):
    """The run folder holds something this run must not touch or resume."""


# ---------------------------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None, prog: str, description: str, legacy_cocomix: bool = False) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--config", help="config file, or the name of a packaged config (tiny-test, cpu-smoke, cocomix_cpu, ...)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one key, e.g. --set train.steps=10 (value read as YAML)")
    ap.add_argument("--start-over", action="store_true",
                    help="move a non-empty run.out_dir aside (to <out_dir>.old-<time>) and start a new run there")
    if legacy_cocomix:  # spellings of the former training/train_cocomix.py, kept for its scripts
        ap.add_argument("--mode", choices=["cocomix", "ntp"], help="= --set method.name=MODE")
        ap.add_argument("--out-dir", help="= --set run.out_dir=DIR")
        ap.add_argument("--stop-after", type=int, metavar="N", help="= --set run.stop_after=N")
    args = ap.parse_args(argv)
    if legacy_cocomix:
        for flag, key in (("mode", "method.name"), ("out_dir", "run.out_dir"), ("stop_after", "run.stop_after")):
            if getattr(args, flag) is not None:
                args.overrides.append(f"{key}={getattr(args, flag)}")
    return args


def entry(main, argv: list[str] | None = None) -> int:
    """Run ``main(argv)`` as a command: a :class:`ProbelabError` is one ``error:`` line and exit 1,
    Ctrl-C is ``interrupted`` and exit 130."""
    try:
        main(argv)
    except ProbelabError as e:
        print(f"error: {(str(e).splitlines() or [type(e).__name__])[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def recipe_main(recipe: str):
    if recipe == "cocomix":
        from .cocomix import main
    else:
        from .csft import main
    return main


def dispatch(argv: list[str] | None = None):
    """``python -m probelab.train --config X``: run the recipe the config names (``run.recipe``)."""
    args = parse_args(argv, "probelab.train", "Train with the recipe the config names (run.recipe: csft | cocomix).",
                      legacy_cocomix=True)
    from .config import apply_overrides, read_raw, recipe_of

    raw = apply_overrides(read_raw(args.config) if args.config else {}, list(args.overrides))
    return recipe_main(recipe_of(raw))(argv)


# ---------------------------------------------------------------------------------------------- the run folder
@dataclass
class RunStart:
    out: Path
    resume_from: Path | None  # the checkpoint folder to restore, or None for a new run
    state: dict | None  # its state.json
    run_id: str  # recorded in every checkpoint; pruning touches only this run's
    finished: bool = False  # the checkpoint reached train.steps and final/ exists: nothing to do

    @property
    def step(self) -> int:
        return int(self.state["step"]) if self.state else 0


def _aside(out: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = out.with_name(f"{out.name}.old-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = out.with_name(f"{out.name}.old-{stamp}-{n}")
    os.replace(out, target)
    return target


def _new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def open_run(cfg, start_over: bool = False, final_name: str = "final", is_main: bool = True) -> RunStart:
    """Apply the run-folder rules above (nothing is written except the move-aside) and say where to start."""
    from ..paths import check_out

    out = Path(cfg.run.out_dir)
    # the file, symlink, home / root / current-folder and permission refusals of every probelab output
    check_out(out, kind="training run", overwrite=True, option="run.out_dir")
    occupied = out.is_dir() and any(out.iterdir())
    if occupied and start_over:
        if is_main:
            moved = _aside(out)
            print(f"[train] moved the previous run in {out} to {moved}", flush=True)
        occupied = False
    ckpt_root = out / "checkpoints"
    resume = cfg.run.resume
    if occupied and resume == "never":
        raise RunFolderError(f"run.resume=never but {out} is not empty; pass --start-over to move it aside "
                             f"(to {out.name}.old-<time>) or choose another run.out_dir")
    latest = latest_checkpoint(ckpt_root) if occupied and resume != "never" else None
    if resume == "must" and latest is None:
        raise CheckpointError(f"run.resume=must but {ckpt_root} has no checkpoint")
    if latest is None:
        if occupied and not _same_run_restarting(out, cfg):
            raise RunFolderError(f"{out} holds files that are not a checkpoint of this config; pass --start-over "
                                 f"to move them aside (to {out.name}.old-<time>) or choose another run.out_dir")
        return RunStart(out, None, None, _new_run_id())
    state = read_state(latest)
    diff = cfg.identity_diff(state.get("identity", {}))
    if diff:
        raise CheckpointError(f"cannot resume {out}: the config differs from the checkpoint's in "
                              f"{', '.join(diff[:4])} (use a new run.out_dir, or --start-over)")
    run_id = state.get("run_id") or f"legacy-{state.get('fingerprint', 'run')}"
    finished = int(state["step"]) >= cfg.train.steps and (out / final_name).is_dir()
    return RunStart(out, latest, state, run_id, finished)


def finished_summary(start: RunStart, cfg, accelerator) -> dict:
    """A finished run is a no-op: say so once, end the Accelerate run and return the summary it
    wrote (``{}`` when it has none). Both training loops call this when ``start.finished``."""
    if accelerator.is_main_process:
        print(f"[train] {start.out} already finished at step {start.step} (train.steps={cfg.train.steps}); "
              "nothing to do", flush=True)
    accelerator.end_training()
    summary = start.out / "summary.json"
    return json.loads(summary.read_text()) if summary.is_file() else {}


def _same_run_restarting(out: Path, cfg) -> bool:
    """A folder that only holds the first files of this very config (killed before its first checkpoint)."""
    try:
        saved = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(saved, dict) or (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        return False
    try:
        from .config import from_dict

        old = from_dict({k: v for k, v in saved.items() if isinstance(v, dict)})
    except ProbelabError:
        return False
    return type(old) is type(cfg) and not cfg.identity_diff(old.identity())


# ---------------------------------------------------------------------------------------------- process setup
def resolve_precision(value: str) -> str:
    """``train.precision`` for Accelerate: ``auto`` → ``bf16`` where bf16 is native (a GPU that supports
    it, a CPU with AVX512-BF16/AMX), else ``no`` (fp32). An explicit ``bf16`` on a CPU without native bf16
    is kept, with a one-line note: there it is emulated and runs many times slower than fp32."""
    import torch

    from ..models.devices import native_bf16

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if value == "auto":
        return "bf16" if native_bf16(device) else "no"
    if value == "bf16" and not native_bf16(device):
        print(f"note: train.precision=bf16 on a {device} without native bf16 (no AVX512-BF16/AMX): it is emulated "
              "and much slower than fp32 here; train.precision=auto picks fp32", file=sys.stderr, flush=True)
    return value


def set_threads(world: int) -> None:
    """CPU threads per process: ``$PROBELAB_THREADS``, else 2 shared by the processes on this machine."""
    import torch

    env = os.environ.get("PROBELAB_THREADS")
    torch.set_num_threads(int(env) if env and env.isdigit() and int(env) > 0
                          else max(1, min(2, (os.cpu_count() or 1) // world)))


def check_params_finite(model, step: int, accelerator) -> None:
    """Stop (every process together) when a trained parameter is no longer finite after ``step``."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    total = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for p in params:
        total += p.detach().sum(dtype=torch.float64)
    if accelerator.num_processes > 1:
        total = accelerator.reduce(total.reshape(1), "sum")[0]
    if bool(torch.isfinite(total)):
        return
    from .checkpoint import NonFiniteError, first_nonfinite

    name = first_nonfinite((n, p.detach()) for n, p in model.named_parameters() if p.requires_grad)
    raise NonFiniteError(f"step {step}: parameter {name or '(on another process)'} is not finite (nan or inf) "
                         "after the update; the final model was not written; lower train.lr or check train.grad_clip")


def check_finite_model(model, step: int) -> None:
    """Before the final model is written: every tensor of its state dict must be finite."""
    from .checkpoint import NonFiniteError, first_nonfinite

    bad = first_nonfinite(model.state_dict().items())
    if bad:
        raise NonFiniteError(f"step {step}: {bad} is not finite (nan or inf); the final model was not written")
