"""Start the CPU smoke training run from the app, in the background, and follow it.

The run is ``python -m probelab.train.csft --config cpu-smoke`` (the packaged config: Control LLM
Lerp6-MSE on the embedded model, a few minutes on a laptop CPU); it writes ``runs/cpu-smoke/final``,
which the alignment page then lists under *Checkpoints*. The app only launches the package's
training loop and reads its log; the state of the launch is one JSON file, so a reloaded page (or
a restarted app) still knows it.

Any visitor of the app could start it, so it is offered only when the app listens on this machine
alone (``probelab app`` binds 127.0.0.1 unless given ``--host``) or when ``PROBELAB_APP_TRAINING=1``
says so explicitly.
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

SMOKE_CONFIG_NAME = "cpu-smoke"
SMOKE_OUT = "runs/cpu-smoke"  # where the app starts it, relative to the folder the app runs in
ALLOW_ENV = "PROBELAB_APP_TRAINING"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def state_file() -> Path:
    from ..paths import cache_dir

    return cache_dir() / "app" / "smoke-run.json"


def smoke_config() -> Path | None:
    """The packaged cpu-smoke config, or None when this installation lacks it."""
    from ..resources import training_config

    try:
        return training_config(SMOKE_CONFIG_NAME)
    except ProbelabError:
        return None


def server_address() -> str | None:
    """The address the running Streamlit server listens on (None: not set, i.e. every interface)."""
    try:
        from streamlit import config

        return config.get_option("server.address")
    except Exception:  # streamlit missing or not configured
        return None


def allowed() -> bool:
    """Training from the app: only on a local-only server, or when PROBELAB_APP_TRAINING=1."""
    if os.environ.get(ALLOW_ENV, "").strip().lower() in {"1", "true", "yes"}:
        return True
    address = server_address()
    return address is not None and address.strip().lower() in LOCAL_HOSTS


def available() -> bool:
    """Whether the app offers the smoke run: the config is there and the app may start training."""
    return allowed() and smoke_config() is not None


def smoke_argv(out_dir: str | Path) -> list[str]:
    config = smoke_config()
    if config is None:
        raise ProbelabError(f"the packaged training config {SMOKE_CONFIG_NAME!r} is missing; reinstall probelab")
    return [sys.executable, "-m", "probelab.train.csft", "--config", str(config), "--set", f"run.out_dir={out_dir}",
            "--set", "run.progress=false"]


@dataclass
class RunStatus:
    state: str           # none | running | finished | failed
    out: Path | None = None
    log_tail: str = ""

    @property
    def final(self) -> Path | None:
        return None if self.out is None else self.out / "final"


def _alive(pid: int, started: float | None = None) -> bool:
    """Whether the run's process is still running: alive, not a zombie of ours, and (with ``started``)
    not a later process that reuses the pid of the finished run."""
    from ..paths import pid_owns

    if started is not None and not pid_owns(pid, started):
        return False
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
    if _alive(int(st["pid"]), st.get("started")):
        return RunStatus("running", out, tail)
    if (out / "final" / "config.json").is_file():
        return RunStatus("finished", out, tail)
    return RunStatus("failed", out, tail)


def start(out_dir: str | Path = SMOKE_OUT, argv: list[str] | None = None) -> RunStatus:
    """Launch the smoke run in the background (one at a time); its output goes to ``<out_dir>.app.log``."""
    from ..paths import atomic_write_text

    if argv is None and not allowed():
        raise ProbelabError(f"training from the app is off: the app listens on {server_address() or 'every interface'}; "
                            f"bind it to 127.0.0.1 or set {ALLOW_ENV}=1")
    if status().state == "running":
        raise ProbelabError("a training run started from the app is still running")
    out = Path(out_dir).resolve()
    log = out.with_name(out.name + ".app.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv or smoke_argv(out), stdout=fh, stderr=subprocess.STDOUT, cwd=out.parent,
                                start_new_session=True)
    atomic_write_text(state_file(), json.dumps({"pid": proc.pid, "out": str(out), "log": str(log),
                                                "started": time.time()}))
    return RunStatus("running", out, "")
