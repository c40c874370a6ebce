"""The ``streamlit run`` command behind ``probelab app`` (through :mod:`probelab.app.server`, which starts
the first page's imports and model load early): local only by default, headless, no telemetry.

>>> argv = streamlit_argv(Path("probelab/app/main.py"), "127.0.0.1", 8501)
>>> argv[argv.index("--browser.gatherUsageStats") + 1], argv[argv.index("--server.address") + 1]
('false', '127.0.0.1')
"""
from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

from ..errors import ProbelabError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
APP_FILE = "main.py"
STOP_GRACE_S = 1.5  # after SIGTERM/SIGINT, Streamlit gets this long to stop by itself, then it is killed


def app_script() -> Path:
    """The Streamlit entry script, ``probelab/app/main.py`` (shipped inside the package)."""
    path = Path(__file__).resolve().parents[1] / "app" / APP_FILE
    if not path.is_file():
        raise ProbelabError(f"the app script {path} is missing: this probelab installation is incomplete; "
                            "reinstall it")
    return path


def is_local(host: str) -> bool:
    return host.strip().lower() in LOCAL_HOSTS


def exposure_warning(host: str) -> str | None:
    """A warning when the app would listen beyond this machine (it has no authentication)."""
    if is_local(host):
        return None
    return (f"warning: binding to {host} makes the app reachable from other machines; it has no authentication "
            "and loads any model folder a visitor names. Use 127.0.0.1 unless you mean it.")


def check_port(host: str, port: int) -> None:
    """One-line error when ``port`` is not a valid port or is already taken on ``host``."""
    if not 1 <= port <= 65535:
        raise ProbelabError(f"port {port} is out of range 1..65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ProbelabError(f"cannot listen on {host}:{port} ({e.strerror or e}); pass another --port") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def streamlit_argv(script: Path, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "probelab.app.server", "run", str(script),  # Streamlit's CLI + prewarm
            "--server.address", host, "--server.port", str(port),
            "--server.headless", "true",               # no browser auto-open, no e-mail prompt
            "--browser.gatherUsageStats", "false",     # no telemetry
            "--server.fileWatcherType", "none",        # no file watcher threads (this is not a dev server)
            "--global.developmentMode", "false",
            "--client.toolbarMode", "minimal"]


def serve(argv: list[str], env: Mapping[str, str] | None = None, grace: float = STOP_GRACE_S) -> int:
    """Run the server ``argv`` as a child process until it exits or this process is asked to stop.

    SIGTERM, SIGINT (Ctrl-C) and SIGHUP are forwarded to the server as SIGTERM; if it has not exited
    ``grace`` seconds later (a page still computing holds Streamlit's script thread, and Python waits
    for it before exiting) it is killed. Returns the exit code: 0 after a requested stop, else the
    server's own.
    """
    proc = subprocess.Popen(argv, env=dict(env) if env is not None else None)
    asked: list[float] = []

    def stop(_signum, _frame) -> None:
        if not asked:
            asked.append(time.monotonic())
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    wanted = [s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, stop) for s in wanted}
    try:
        while True:
            try:
                code = proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if asked and time.monotonic() - asked[0] > grace:
                    proc.kill()
                    proc.wait()
                    code = 0
                    break
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:  # an exception in this loop: never leave the server behind
            proc.kill()
            proc.wait()
    return 0 if asked else code
