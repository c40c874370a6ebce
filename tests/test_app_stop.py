"""`probelab app` stops within seconds of SIGTERM / Ctrl-C, even when the server will not stop by itself."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from probelab.app_support import launch

# a stand-in server: writes its pid, then ignores SIGTERM (as Streamlit does while a page's script
# thread is busy in a long computation) or exits on it
CHILD = r"""
import os, signal, sys, time
if sys.argv[2] == "stuck":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(120)
"""
# as in `probelab app`: the CLI starts first, so probelab imports nothing heavy (no torch to tear down at exit)
SUPERVISOR = r"""
import sys
import probelab.cli
from probelab.app_support.launch import serve
assert "torch" not in sys.modules
sys.exit(serve([sys.executable, "-c", %r, sys.argv[1], sys.argv[2]]))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("child", ["stuck", "polite"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_the_server_within_the_grace_period(tmp_path, child, sig):
    pid_file = tmp_path / "pid"
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR % CHILD, str(pid_file), child])
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    server = int(pid_file.read_text())
    t0 = time.monotonic()
    proc.send_signal(sig)
    code = proc.wait(timeout=30)
    took = time.monotonic() - t0
    assert code == 0  # a requested stop is a clean exit
    assert not _alive(server), "the server outlived probelab app"
    assert took < launch.STOP_GRACE_S + 1.5, took
    if child == "polite":
        assert took < launch.STOP_GRACE_S, took  # a server that stops by itself is not waited on


def test_serve_passes_the_servers_own_exit_code_through():
    assert launch.serve([sys.executable, "-c", "import sys; sys.exit(3)"]) == 3
