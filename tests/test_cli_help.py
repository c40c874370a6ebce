"""`probelab --help` and every `COMMAND --help` answer without importing torch or transformers.

The command tree is walked from the Typer app itself, so a new command is checked without editing
this file. Each check runs in a fresh interpreter (a subprocess): modules imported by earlier tests
in this process would hide an eager import.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

HEAVY = ("torch", "transformers", "sae_lens", "datasets", "streamlit", "umap", "sklearn", "plotly", "pandas")

# In a fresh interpreter: every command path's --help through probelab.cli.main, and after each one
# the heavy modules that appeared (so a failure names the command that pulled them in).
WALK = r"""
import contextlib, io, json, sys
import typer
from probelab.cli import build_app, main

HEAVY = %r
def paths(cmd, prefix=()):
    yield prefix
    if hasattr(cmd, "commands"):  # a group (typer ships its own click)
        for name, sub in sorted(cmd.commands.items()):
            yield from paths(sub, prefix + (name,))

report = []
for path in list(paths(typer.main.get_command(build_app()))):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main([*path, "--help"])
            code = 0
        except SystemExit as e:
            code = e.code or 0
    report.append({"path": list(path), "code": code, "usage": "Usage:" in out.getvalue(),
                   "heavy": sorted(m for m in HEAVY if m in sys.modules)})
print(json.dumps(report))
"""


def _env() -> dict:
    env = dict(os.environ)
    env.pop("PROBELAB_DEBUG", None)
    return env


def test_every_help_page_imports_neither_torch_nor_transformers():
    proc = subprocess.run([sys.executable, "-c", WALK % (HEAVY,)], capture_output=True, text=True, env=_env(),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    paths = [tuple(r["path"]) for r in report]
    assert () in paths and ("sae", "train") in paths and ("concepts",) in paths and ("app",) in paths
    assert len(paths) >= 15
    for r in report:
        assert r["code"] == 0 and r["usage"], r
        assert r["heavy"] == [], f"`probelab {' '.join(r['path'])} --help` imported {r['heavy']}"


@pytest.mark.parametrize("args", [["--help"], ["concepts", "--help"], ["sae", "train", "--help"]])
def test_help_in_a_fresh_process_and_its_time(args):
    """The real entry point (``python -m probelab.cli``): no torch in ``-X importtime``; wall time printed."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "probelab.cli", *args], capture_output=True,
                          text=True, env=_env(), timeout=120)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Usage:" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    top = {name.split(".")[0] for name in imported}
    assert "torch" not in top and "transformers" not in top, sorted(top & set(HEAVY))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    # a bench line, not an assertion: wall time depends on the machine and its load (-X importtime adds a little)
    print(f"\nbench: probelab {' '.join(args)}: {wall:.2f} s wall, {len(imported)} modules (load average {load:.2f})")
