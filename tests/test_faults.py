"""Faults and bad input, through the command line in a subprocess: exit code, the one-line message,
and what is on disk afterwards (nothing unrelated deleted, no leftovers).

Most cases fail before any model is loaded (a few seconds each). The file-system cases that need
many processes (concurrency, SIGKILL) run a small writer that imports only ``probelab.paths``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBELAB = [sys.executable, "-m", "probelab.cli"]

# A writer that imports probelab.paths without the package's __init__ (no torch): fast to start.
WRITER = textwrap.dedent(f"""
    import sys, time, types
    pkg = types.ModuleType("probelab"); pkg.__path__ = [{str(ROOT / "probelab")!r}]; sys.modules["probelab"] = pkg
    from probelab.paths import atomic_dir
    target, n, tag, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    for i in range(n):
        with atomic_dir(target, kind="test") as d:
            for j in range(3):
                (d / f"f{{j}}.txt").write_text(f"{{tag}}-{{i}}")
            if hold:
                print("inside", flush=True)
                time.sleep(hold)
    print("done", flush=True)
""")


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PROBELAB_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}


def run(args, tmp_path: Path, cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*PROBELAB, *args], cwd=cwd or tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=timeout)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if "cache" not in p.parts)


# ---- exit codes --------------------------------------------------------------------------------
def test_bare_command_prints_help_and_exits_0(tmp_path):
    p = run([], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Usage" in p.stdout and "capture" in p.stdout and "error" not in p.stderr


@pytest.mark.parametrize("args, option", [
    (["capture", "--out", "o", "--batch-size", "0"], "--batch-size"),
    (["align", "x", "--out", "o", "--k", "0"], "--k"),
    (["align", "x", "--out", "o", "--seed", "-1"], "--seed"),
    (["sae", "train", "--out", "o", "--k", "0"], "--k"),
    (["sae", "train", "--out", "o", "--d-sae", "0"], "--d-sae"),
    (["sae", "train", "--out", "o", "--tokens", "0"], "--tokens"),
    (["capture", "--out", "o", "--nope"], "--nope"),
])
def test_usage_errors_exit_2_and_name_the_option(tmp_path, args, option):
    p = run(args, tmp_path)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert option in p.stderr and "Traceback" not in p.stderr
    assert listing(tmp_path) == []  # nothing written


@pytest.mark.parametrize("args, code, words", [
    (["sae", "train", "--out", "o", "--k", "64", "--d-sae", "16"], 2, ["'--k'", "--d-sae is 16"]),
    (["expand", "tiny-llama", "o", "--alpha", "nan"], 1, ["--alpha", "finite"]),
])
def test_numbers_checked_against_each_other_or_nan_are_refused_before_work(tmp_path, args, code, words):
    p = run(args, tmp_path)
    assert p.returncode == code, p.stderr
    assert all(w in p.stderr for w in words) and "Traceback" not in p.stderr, p.stderr
    assert listing(tmp_path) == []


def test_non_utf8_argument_gives_one_line(tmp_path):
    p = subprocess.run([os.fsencode(sys.executable), b"-m", b"probelab.cli", b"probes", b"show", b"\xff\xfe"],
                       cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "not valid UTF-8" in one_error_line(p)


# ---- outputs -----------------------------------------------------------------------------------
def test_unknown_folder_is_kept_unless_overwrite(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    p = run(["capture", "-m", "tiny-llama", "-t", "hello", "--out", "mine"], tmp_path)
    assert p.returncode == 1
    line = one_error_line(p)
    assert "notes.txt" in line and "--overwrite" in line
    assert (mine / "notes.txt").read_text() == "precious" and listing(tmp_path) == ["mine", "mine/notes.txt"]

    p = run(["capture", "-m", "tiny-llama", "-t", "hello", "--out", "mine", "--overwrite"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert not (mine / "notes.txt").exists()
    man = json.loads((mine / ".probelab-output.json").read_text())
    assert man["kind"] == "captures" and man["files"] == ["captures.json", "states.safetensors"]
    assert "capture" in man["command"] and man["version"]
    mode = (mine / "states.safetensors").stat().st_mode & 0o777
    assert mode == 0o666 & ~_umask(), oct(mode)  # not 0600
    assert listing(tmp_path) == ["mine", "mine/.probelab-output.json", "mine/captures.json", "mine/states.safetensors"]


def test_own_output_is_replaced_other_kinds_and_foreign_folders_are_not(tmp_path):
    from probelab.paths import OutputExists, atomic_dir

    out = tmp_path / "out"
    for text in ("first", "second"):  # an earlier output of the same kind: replaced without overwrite
        with atomic_dir(out, kind="captures") as d:
            (d / "captures.json").write_text(text)
    assert (out / "captures.json").read_text() == "second"
    with pytest.raises(OutputExists, match="probelab captures output"):
        with atomic_dir(out, kind="alignment") as d:
            (d / "metrics.json").write_text("{}")
    legacy = tmp_path / "legacy"  # from before manifests: only files a capture writes
    legacy.mkdir()
    (legacy / "captures.json").write_text("old")
    (legacy / "states.safetensors").write_bytes(b"")
    with atomic_dir(legacy, kind="captures") as d:
        (d / "captures.json").write_text("new")
    assert sorted(os.listdir(legacy)) == [".probelab-output.json", "captures.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["legacy", "out"]


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


@pytest.mark.parametrize("out, why", [(".", "current folder"), ("..", "parent of the current folder"),
                                      ("~", "home folder"), ("/", "root")])
def test_protected_folders_are_never_replaced_even_with_overwrite(tmp_path, out, why):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("x")
    p = run(["capture", "-m", "tiny-llama", "-t", "hi", "--out", out, "--overwrite"], tmp_path, cwd=work)
    assert p.returncode == 1
    assert why in one_error_line(p)
    assert (work / "keep.txt").read_text() == "x" and not list(tmp_path.glob(".*tmp-*"))


def test_a_file_is_never_replaced_by_a_folder(tmp_path):
    (tmp_path / "f.txt").write_text("data")
    for out in ("f.txt", "f.txt/inner"):
        p = run(["capture", "-m", "tiny-llama", "-t", "hi", "--out", out, "--overwrite"], tmp_path)
        assert p.returncode == 1
        assert "is a file" in one_error_line(p)
    assert (tmp_path / "f.txt").read_text() == "data" and listing(tmp_path) == ["f.txt"]


def test_read_only_parent_gives_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root ignores the mode: run the command as nobody instead
            pytest.importorskip("pwd")
            import pwd

            try:
                nobody = pwd.getpwnam("nobody")
            except KeyError:
                pytest.skip("no user nobody to run as")
            tmp_path.chmod(0o755)
            cmd = [*PROBELAB, "capture", "-t", "hi", "--out", str(ro / "x")]
            try:
                p = subprocess.run(cmd, cwd="/", env={**_env(tmp_path), "HOME": str(tmp_path)}, capture_output=True,
                                   text=True, timeout=120, user=nobody.pw_uid, group=nobody.pw_gid)
            except PermissionError:  # this checkout's Python is private to root: check the rule in-process
                from probelab.paths import OutputError, check_out

                real = os.access
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(os, "access", lambda q, m, **kw: False if Path(q) == ro else real(q, m, **kw))
                    with pytest.raises(OutputError, match="is not writable"):
                        check_out(ro / "x")
                return
            if "rror" in p.stderr and "error: " not in p.stderr:
                pytest.skip(f"the checkout cannot be run as nobody: {p.stderr.splitlines()[-1:]}")
        else:
            p = run(["capture", "-t", "hi", "--out", str(ro / "x")], tmp_path)
        assert p.returncode == 1
        assert "not writable" in one_error_line(p)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


# ---- interrupts and kills ----------------------------------------------------------------------
def _wait_for(pred, timeout: float, proc=None) -> None:
    t0 = time.monotonic()
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.returncode} {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _has_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the command start")
@pytest.mark.parametrize("sig, code, message", [(signal.SIGINT, 130, "error: interrupted"),
                                                (signal.SIGTERM, 143, "error: terminated")])
def test_ctrl_c_or_sigterm_during_capture_gives_one_line_and_leaves_nothing(tmp_path, sig, code, message):
    texts = [a for i in range(200) for a in ("-t", f"text number {i} " * 20)]
    # A job started in the background by a non-interactive shell (as CI may be) inherits SIGINT
    # ignored, and Python then never raises KeyboardInterrupt: give the command a terminal's default.
    proc = subprocess.Popen([*PROBELAB, "capture", "-m", "tiny-llama", *texts, "--out", "out"], cwd=tmp_path,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for(lambda: _has_torch(proc.pid), 120, proc)  # inside the command, loading the model
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, (proc.returncode, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1] == message and "Traceback" not in err, err
    assert listing(tmp_path) == []


def _writer(tmp_path, target, n, tag, hold=0.0, env=None, **kw):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(n), tag, str(hold)], cwd=tmp_path,
                            env={**_env(tmp_path), **(env or {})}, text=True, **kw)


def test_sigkill_mid_write_leaves_a_temp_folder_the_next_run_removes(tmp_path):
    target = tmp_path / "out"
    proc = _writer(tmp_path, target, 1, "killed", hold=60, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "inside"
    proc.kill()
    proc.wait()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".out.tmp-")  # what a SIGKILL leaves
    # a kill between the two renames of a replace leaves the old output as .out.old-PID-*: restored
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale_old = tmp_path / f".other.old-{dead.stdout.strip()}-abc"
    stale_old.mkdir()
    (stale_old / "f0.txt").write_text("previous")
    p = _writer(tmp_path, target, 1, "next")
    assert p.wait(60) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [stale_old.name, "out"]  # the killed run's temp: gone
    assert (target / "f0.txt").read_text() == "next-0"
    from probelab.paths import clean_leftovers

    clean_leftovers(tmp_path, "other")  # what the next write of `other` does first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "out"]
    assert (tmp_path / "other" / "f0.txt").read_text() == "previous"


def test_sae_scratch_of_a_dead_process_is_removed_by_the_next_run(tmp_path):
    cache = tmp_path / "cache"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    scratch = cache / "tmp" / f"probelab-sae-{dead.stdout.strip()}-x1y2z3"
    (scratch / "activations").mkdir(parents=True)
    (scratch / "activations" / "shard.arrow").write_bytes(b"0" * 1000)
    live = cache / "tmp" / f"probelab-sae-{os.getpid()}-alive"  # a running process's: kept
    live.mkdir()
    p = run([], tmp_path)  # any probelab command, even the bare one
    assert p.returncode == 0, p.stderr
    assert not scratch.exists() and live.exists()


def test_four_concurrent_writers_take_turns(tmp_path):
    target = tmp_path / "shared"
    procs = [_writer(tmp_path, target, 15, tag, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for tag in "abcd"]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [r[1] for r in results]
    assert all(r[1] == "" for r in results), [r[1] for r in results]  # no raw errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]  # no hidden folders left
    contents = {(target / f"f{j}.txt").read_text() for j in range(3)}
    assert len(contents) == 1 and contents.pop().endswith("-14")  # one writer's complete output


def test_a_held_lock_times_out_with_one_line(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time, types
        pkg = types.ModuleType("probelab"); pkg.__path__ = [{str(ROOT / "probelab")!r}]; sys.modules["probelab"] = pkg
        from probelab.locks import file_lock
        with file_lock({str(tmp_path)!r}):
            print("held", flush=True); time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, env=_env(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "held"
        p = _writer(tmp_path, tmp_path / "o", 1, "late", env={"PROBELAB_LOCK_TIMEOUT": "0.3"}, stderr=subprocess.PIPE)
        err = p.communicate(timeout=60)[1]
        assert p.returncode == 1 and "LockTimeout" in err and "is busy: another probelab process" in err
        assert sorted(x.name for x in tmp_path.iterdir()) == []  # nothing started
    finally:
        holder.kill()
        holder.wait()


# ---- models, SAEs, caches ----------------------------------------------------------------------
def test_default_sae_that_does_not_fit_fails_before_any_training(tmp_path):
    p = run(["concepts", "hello", "-m", "tiny-llama", "--sae", "default", "--no-labels"], tmp_path)
    assert p.returncode == 1
    line = one_error_line(p)
    assert "does not fit" in line and "hidden size 64" in line
    assert not (tmp_path / "cache" / "saes").exists()  # nothing trained
    assert not [p for p in (tmp_path / "cache").rglob("probelab-sae-*")]


def test_long_text_is_refused_with_its_length(tmp_path):
    p = run(["capture", "-m", "tiny-llama", "-t", "short", "-t", "word " * 700, "--out", "o"], tmp_path)
    assert p.returncode == 1
    line = one_error_line(p)
    assert "text 2 has" in line and "context of 512" in line
    assert listing(tmp_path) == []


def test_replacing_a_model_in_place_invalidates_concept_labels(tmp_path, monkeypatch):
    import torch

    import probelab
    from probelab.models.loading import save_hf_folder
    from probelab.sae.labels import labels_path
    from probelab.sae.tiny import tiny_sae

    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path / "cache"))
    model, tok = probelab.load_model("tiny-llama")
    folder = tmp_path / "model"
    save_hf_folder(model, folder, tok)
    sae = tiny_sae(d_in=int(model.config.hidden_size))
    texts = ["a text to label"]
    m1, t1 = probelab.load_model(str(folder))
    first = labels_path(m1, t1, sae, texts)
    assert labels_path(*probelab.load_model(str(folder)), sae, texts) == first  # same weights: same key
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(2)
    save_hf_folder(model, folder, tok)  # same path, new weights
    m2, t2 = probelab.load_model(str(folder))
    assert labels_path(m2, t2, sae, texts) != first


def test_app_download_offers_only_the_files_probelab_wrote(tmp_path):
    from probelab.paths import alignment_files, atomic_dir

    out = tmp_path / "align"
    with atomic_dir(out, kind="alignment") as d:
        for name in ("metrics.json", "report.html", "layers.csv"):
            (d / name).write_text(name)
    (out / "secret.key").write_text("not probelab's")  # put there later by someone else
    (out / "notes.csv").symlink_to(tmp_path / "elsewhere.csv")
    assert [p.name for p in alignment_files(out)] == ["layers.csv", "metrics.json", "report.html"]
    legacy = tmp_path / "legacy"  # a folder from before manifests: only an alignment's own file names
    legacy.mkdir()
    for name in ("metrics.json", "table.csv", "id_rsa"):
        (legacy / name).write_text(name)
    assert [p.name for p in alignment_files(legacy)] == ["metrics.json", "table.csv"]


def test_first_conversion_of_the_embedded_model_happens_once(tmp_path, monkeypatch):
    import threading

    from probelab.models import embedded

    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path / "cache"))
    calls = []

    def slow_convert(name, target):  # stands in for the 15 s GGUF dequantization
        calls.append(name)
        time.sleep(0.5)
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")
        header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
        (target / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
        return target

    monkeypatch.setattr(embedded, "_convert", slow_convert)
    got = []
    threads = [threading.Thread(target=lambda: got.append(embedded.materialize_embedded())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert calls == ["smollm2-135m"] and len(got) == 3 and len(set(got)) == 1
    # a cut-short cache file: one line naming the folder to delete
    f = got[0] / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-2])
    with pytest.raises(Exception, match=r"corrupt .*\(rm -r .*smollm2-135m\)"):
        embedded.materialize_embedded()
