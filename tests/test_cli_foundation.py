"""CLI: one-line errors with non-zero exit, never a traceback, never a half-written output."""
import json
import os
import subprocess
import sys

import pytest

from probelab.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.mark.parametrize("args,message", [
    (["capture", "--model", "nope", "-o", "{out}"], "unknown model 'nope'"),
    (["capture", "--model", "./missing/folder", "-o", "{out}"], "does not exist"),
    (["capture", "--model", "tiny-llama", "--probes", "{bad}", "-o", "{out}"], "bad.jsonl:1: missing key"),
    (["capture", "--model", "tiny-llama", "--text", " ", "-o", "{out}"], "non-empty"),
    (["capture", "--model", "tiny-llama", "--select", "first", "-o", "{out}"], "unknown token selection"),
    (["probes", "show", "nope"], "no probe set or file 'nope'"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    out = tmp_path / "out"
    args = [a.format(out=out, bad=bad) for a in args]
    code, _, err = run_cli(args, capsys)
    assert code == 1
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_corrupt_checkpoint_via_cli(tmp_path, capsys, tiny):
    model, tok = tiny
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    f = tmp_path / "m" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    code, _, err = run_cli(["capture", "--model", str(tmp_path / "m"), "-o", str(tmp_path / "o")], capsys)
    assert code == 1 and "corrupt safetensors" in err and not (tmp_path / "o").exists()


def test_capture_writes_loadable_folder(tmp_path, capsys):
    from probelab.capture import Captures

    code = 0
    try:
        main(["capture", "--model", "tiny-llama", "--probes", "analogies", "-o", str(tmp_path / "c"), "--select", "mean"])
    except SystemExit as e:
        code = e.code
    assert code in (0, None)
    caps = Captures.load(tmp_path / "c")
    assert len(caps.texts) == 120 and caps.stream().shape == (5, 120, 64)
    assert json.loads((tmp_path / "c" / "captures.json").read_text())["select"] == "mean"
    assert "cos_pair" in capsys.readouterr().out


def test_console_script_subprocess_has_no_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    exe = os.path.join(os.path.dirname(sys.executable), "probelab")
    r = subprocess.run([exe, "capture", "--model", "nope", "-o", str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("error: unknown model") and "Traceback" not in r.stderr
    r = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "capture" in r.stdout and "models" in r.stdout
    r = subprocess.run([exe, "models"], capture_output=True, text=True)
    assert r.returncode == 0 and "smollm2-135m" in r.stdout
