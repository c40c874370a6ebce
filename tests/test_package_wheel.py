"""The wheel is self-contained: built from the tracked files, installed into a fresh environment, and
run from a folder outside the repository.

One wheel is built per test session from a copy of the checkout's files (the ones git tracks or would
track: what a fresh clone has), with ``pip wheel --no-deps --no-build-isolation --no-index`` (no
network). The fresh environment is a new virtualenv without pip holding only the wheel's probelab; it
reuses this environment's installed dependencies through a ``.pth`` file that names their folder (a
path line does not run this environment's own ``.pth`` files, so the editable checkout's import hook
does not come along).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.wheel, pytest.mark.timeout(600)]


def _source_files(root: Path) -> list[Path]:
    """The files a fresh clone has (tracked + untracked-but-not-ignored), relative to ``root``."""
    if (root / ".git").exists() and shutil.which("git"):
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout
        return [Path(p) for p in out.decode().split("\0") if p and (root / p).is_file()]
    skip = {".git", ".venv", "build", "dist", "runs", "__pycache__", ".pytest_cache"}
    return [p.relative_to(root) for p in root.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(root).parts) and ".egg-info" not in str(p)]


def _run(argv: list, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{argv} -> {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="session")
def source(tmp_path_factory) -> Path:
    """A copy of the checkout's files (the wheel is built from it; others may edit the checkout meanwhile)."""
    src = tmp_path_factory.mktemp("src")
    for rel in _source_files(REPO):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    return src


@pytest.fixture(scope="session")
def wheel(source, tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", dist, source])
    (whl,) = dist.glob("probelab-*.whl")
    return whl


def test_wheel_contains_the_data_the_app_and_the_training_entry_points(wheel, source):
    names = set(zipfile.ZipFile(wheel).namelist())
    # every probe set and every training / Accelerate config of the checkout, bundled
    for folder, pattern in [("probes", "*.jsonl"), ("training/configs", "*.yaml"), ("training/accelerate", "*.yaml")]:
        files = sorted((source / folder).glob(pattern))
        assert files, folder
        for f in files:
            assert f"probelab/_bundled/{folder}/{f.name}" in names, f"{folder}/{f.name} missing from {wheel.name}"
    assert "probelab/_bundled/probes/README.md" in names  # the schema
    # the app: navigation + every page script
    assert "probelab/app/main.py" in names
    pages = sorted(p.name for p in (source / "probelab" / "app" / "views").glob("*.py"))
    assert {"alignment.py", "concepts.py", "steering.py"} <= set(pages)
    for page in pages:
        assert f"probelab/app/views/{page}" in names
    # the training entry points: the recipes as modules, and every module of the package
    assert {"probelab/train/csft.py", "probelab/train/cocomix.py", "probelab/train/__main__.py"} <= names
    for py in (source / "probelab").rglob("*.py"):
        rel = py.relative_to(source).as_posix()
        assert rel in names, f"{rel} missing from the wheel"
    # nothing from outside the package, no stray top-level modules
    tops = {n.split("/")[0] for n in names}
    assert tops == {"probelab", f"probelab-{wheel.name.split('-')[1]}.dist-info"}, tops
    meta = zipfile.ZipFile(wheel).read(f"probelab-{wheel.name.split('-')[1]}.dist-info/METADATA").decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert "torch>=2.6" in requires and any(r.lower().startswith("pyyaml") for r in requires), requires
    assert not any("==" in r.split(";")[0] for r in requires), requires  # ranges only, no pins
    entry = zipfile.ZipFile(wheel).read(f"probelab-{wheel.name.split('-')[1]}.dist-info/entry_points.txt").decode()
    assert "probelab = probelab.cli:main" in entry


@pytest.fixture(scope="session")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh virtualenv with the wheel installed; returns its paths and a clean environment."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    # this environment's dependencies, after the venv's own site-packages
    deps = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    (purelib / "zz_probelab_test_deps.pth").write_text("\n".join(deps) + "\n")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel])
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PROBELAB_PROBES_DIR", "PROBELAB_CONFIGS_DIR", "PROBELAB_DEBUG")}
    env.update(PROBELAB_CACHE=str(root / "cache"), COLUMNS="250", TOKENIZERS_PARALLELISM="false")
    work = root / "work"  # the folder the commands run in: outside the repository
    work.mkdir()
    assert REPO not in work.parents
    return {"venv": venv, "py": py, "purelib": purelib,
            "probelab": venv / ("Scripts/probelab.exe" if os.name == "nt" else "bin/probelab"), "env": env, "work": work}


def test_the_fresh_environment_imports_the_wheel_not_the_checkout(installed):
    code = "import importlib.util, json; print(json.dumps(importlib.util.find_spec('probelab').origin))"
    origin = Path(json.loads(_run([installed["py"], "-c", code], cwd=installed["work"], env=installed["env"]).stdout))
    assert origin == installed["purelib"] / "probelab" / "__init__.py"
    assert (installed["purelib"] / "probelab" / "_bundled" / "probes" / "analogies.jsonl").is_file()


def test_probes_show_outside_the_repository(installed):
    out = _run([installed["probelab"], "probes"], cwd=installed["work"], env=installed["env"]).stdout
    assert "analogies" in out and str(installed["purelib"] / "probelab" / "_bundled" / "probes") in out, out
    assert str(REPO) not in out
    out = _run([installed["probelab"], "probes", "show", "analogies"], cwd=installed["work"], env=installed["env"]).stdout
    assert "120 sentences, 60 pairs" in out and "king is to" in out, out[-2000:]


def test_train_tiny_config_two_steps_outside_the_repository(installed):
    run = installed["work"] / "tiny-run"
    proc = _run([installed["probelab"], "train", "--config", "tiny-test", "--set", "train.steps=2",
                 "--set", f"run.out_dir={run}"], cwd=installed["work"], env=installed["env"], timeout=400)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert steps and max(steps) == 2, (steps, proc.stderr[-2000:])
    assert (run / "final" / "config.json").is_file() and (run / "summary.json").is_file()
    assert json.loads((run / "final" / "config.json").read_text())["model_type"] == "control_llm"


def _children(pid: int) -> list[str]:
    """Command lines of ``pid``'s child processes (Linux /proc; empty elsewhere)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(stat.with_name("cmdline").read_bytes().replace(b"\0", b" ").decode())
    return out


def test_app_answers_its_health_endpoint_outside_the_repository(installed):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = installed["work"] / "app.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(installed["probelab"]), "app", "--port", str(port)], cwd=installed["work"],
                                env=installed["env"], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    body = r.read().decode()
                    break
            time.sleep(0.5)
        assert body is not None and body.strip() == "ok", f"no health answer; log:\n{log.read_text()[-3000:]}"
        servers = _children(proc.pid)
        if Path("/proc").is_dir():  # the server runs the wheel's app script
            assert any(str(installed["purelib"] / "probelab" / "app" / "main.py") in c for c in servers), servers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
