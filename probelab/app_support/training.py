"""Start the CPU smoke training run from the app, in the background, and follow it.

The run is ``training/train_csft.py --config training/configs/cpu-smoke.yaml`` (Control LLM Lerp6-MSE
on the embedded model, a few minutes on a laptop CPU); it writes ``runs/cpu-smoke/final``, which the
alignment page then lists under *Checkpoints*. The app only launches the script and reads its log;
the state of the launch is one JSON file, so a reloaded page (or a restarted app) still knows it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ProbelabError

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "train_csft.py"
SMOKE_CONFIG = REPO / "training" / "configs" / "cpu-smoke.yaml"
SMOKE_OUT = "runs/cpu-smoke"  # the config's run.out_dir, relative to where the app runs


def state_file() -> Path:
    from ..paths import cache_dir

    return cache_dir() / "app" / "smoke-run.json"


def available() -> bool:
    return SCRIPT.is_file() and SMOKE_CONFIG.is_file()


def smoke_argv(out_dir: str | Path) -> list[str]:
    return [sys.executable, str(SCRIPT), "--config", str(SMOKE_CONFIG), "--set", f"run.out_dir={out_dir}"]


@dataclass
class RunStatus:
    state: str           # none | running | finished | failed
    out: Path | None = None
    log_tail: str = ""

    @property
    def final(self) -> Path | None:
        return None if self.out is None else self.out / "final"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of our own child counts as finished
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def status() -> RunStatus:
    """What the last run started from the app is doing (read from its state file and log)."""
    f = state_file()
    if not f.is_file():
        return RunStatus("none")
    try:
        st = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return RunStatus("none")
    out, log = Path(st["out"]), Path(st["log"])
    tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
    if _alive(int(st["pid"])):
        return RunStatus("running", out, tail)
    if (out / "final" / "config.json").is_file():
        return RunStatus("finished", out, tail)
    return RunStatus("failed", out, tail)


def start(out_dir: str | Path = SMOKE_OUT, argv: list[str] | None = None) -> RunStatus:
    """Launch the smoke run in the background (one at a time); its output goes to ``<out_dir>.app.log``."""
    from ..paths import atomic_write_text

    if argv is None and not available():
        raise ProbelabError(f"the training script {SCRIPT} or its config {SMOKE_CONFIG} is missing")
    if status().state == "running":
        raise ProbelabError("a training run started from the app is still running")
    out = Path(out_dir).resolve()
    log = out.with_name(out.name + ".app.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv or smoke_argv(out), stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
    atomic_write_text(state_file(), json.dumps({"pid": proc.pid, "out": str(out), "log": str(log),
                                                "started": time.time()}))
    return RunStatus("running", out, "")
