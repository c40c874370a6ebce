"""The continual-SFT training script on tiny models: resume after a kill, DDP, NaN, bad input."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from probelab.errors import ProbelabError
from probelab.train.checkpoint import CheckpointError
from probelab.train.config import ConfigError, load_config
from probelab.train.curves import read_jsonl
from probelab.train.methods import apply_method, count_params

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "train_csft.py"
TINY = ROOT / "training" / "configs" / "tiny-test.yaml"
QUIET = ["eval.wiki_n=0", "eval.mmlu_n=0", "eval.wiki_mc_n=0", "eval.skill_n=2", "eval.max_new_tokens=2"]


def _script():
    spec = importlib.util.spec_from_file_location("train_csft", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_inproc(out: Path, *sets: str) -> dict:
    argv = ["--config", str(TINY), "--set", f"run.out_dir={out}"]
    for s in (*QUIET, *sets):
        argv += ["--set", s]
    return _script().main(argv)


def run_subproc(out: Path, *sets: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [*(launcher or [sys.executable]), str(SCRIPT), "--config", str(TINY), "--set", f"run.out_dir={out}"]
    for s in (*QUIET, *sets):
        cmd += ["--set", s]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown method 'sgd'; known: full, partial, stack, hybrid, control"):
        load_config(TINY, ["method.name=sgd"])
    with pytest.raises(ConfigError, match=r"unknown config key train.stepz"):
        load_config(TINY, ["train.stepz=3"])
    with pytest.raises(ConfigError, match=r"train.steps: 'many' is not an integer"):
        load_config(TINY, ["train.steps=many"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(TINY, ["steps=3"])
    # YAML 1.1 reads an unquoted `no` as false: precision=no still means fp32, in a file or an override
    assert load_config(TINY, ["train.precision=no"]).train.precision == "no"
    unquoted = tmp_path / "unquoted.yaml"
    unquoted.write_text("train:\n  precision: no\n")
    assert load_config(unquoted).train.precision == "no"
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)
    proc = run_subproc(tmp_path / "r", "method.name=sgd")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: unknown method 'sgd'; known: full, partial, stack, hybrid, control"]


def test_methods_train_exactly_their_parameters(tiny):
    model, _ = tiny
    cfg = load_config(TINY, ["method.name=partial", "method.every=2"])
    m = apply_method(model, cfg.method)
    trainable = {n.split(".")[2] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"1", "3"}  # blocks i with (i+1) % 2 == 0 of 4
    assert all(p.requires_grad for p in apply_method(model, load_config(TINY, ["method.name=full"]).method).parameters())
    from probelab.models.tiny import tiny_llama

    ctrl = apply_method(tiny_llama(), load_config(TINY).method)
    n_train, n_all = count_params(ctrl)
    assert 0 < n_train < n_all
    with pytest.raises(ProbelabError, match="larger than the model's 4 layers"):
        apply_method(tiny_llama(), load_config(TINY, ["method.name=partial", "method.every=9"]).method)


def test_kill_then_resume_continues_with_the_same_batches(tmp_path):
    ref = tmp_path / "ref"
    run_inproc(ref)
    killed = tmp_path / "killed"
    proc = run_subproc(killed, "run.kill_at_step=5")
    assert proc.returncode == -9, proc.stderr[-500:]
    assert (killed / "checkpoints" / "latest").read_text().strip() == "step-000004"
    assert not (killed / "final").exists()
    state = json.loads((killed / "checkpoints" / "step-000004" / "state.json").read_text())
    assert state["step"] == 4
    run_inproc(killed)  # run.resume=auto picks up step 4
    a, b = read_jsonl(ref / "metrics.jsonl"), read_jsonl(killed / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert b[4]["data"] == state["data_fingerprint"]  # the next batch after the checkpoint
    for ra, rb in zip(a, b):
        assert ra["data"] == rb["data"]
        assert rb["ce_loss"] == pytest.approx(ra["ce_loss"], rel=1e-5, abs=1e-6)
        assert rb["divergence_loss"] == pytest.approx(ra["divergence_loss"], rel=1e-4, abs=1e-7)
    import probelab

    m1, tok = probelab.load_model(ref / "final")
    m2, _ = probelab.load_model(killed / "final")
    ids = tok(["Question: What is 123 + 456?\nAnswer:"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(m1(input_ids=ids).logits, m2(input_ids=ids).logits, atol=1e-5)

    # resuming with a config that defines a different run is refused
    with pytest.raises(CheckpointError, match=r"config differs .* method.name"):
        run_inproc(killed, "method.name=full", "train.steps=8")
    # a damaged checkpoint is a one-line error, not a traceback
    f = killed / "checkpoints" / "step-000006" / "trainable.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt checkpoint .*trainable.safetensors"):
        run_inproc(killed, "train.steps=8")


def test_nan_loss_stops_with_one_line(tmp_path):
    from probelab.models.tiny import tiny_llama, tiny_tokenizer

    model = tiny_llama()
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    folder = tmp_path / "nan-model"
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    with pytest.raises(ProbelabError, match=r"^loss is nan at step 1 "):
        run_inproc(tmp_path / "r", f"model.name={folder}", "method.name=full")


def test_two_process_ddp_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    # `accelerate launch --cpu` starts one process unless MPI is set up; --multi_gpu starts two
    # through torchrun, and the script's Accelerator(cpu=True) (no CUDA here) makes them use gloo.
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    proc = run_subproc(out, "train.steps=3", "train.checkpoint_every=2", launcher=launcher)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 process(es)" in proc.stdout
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["ce_loss"] > 0 for r in rows)
    assert (out / "final" / "config.json").is_file()
    assert (out / "checkpoints" / "step-000002" / "trainable.safetensors").is_file()


def test_probelab_train_cli_reports_bad_input_in_one_line(capsys):
    from probelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(TINY), "--set", "method.name=sgd"])
    assert e.value.code == 1
    assert capsys.readouterr().err.strip() == "error: unknown method 'sgd'; known: full, partial, stack, hybrid, control"


def test_chunked_loss_gives_the_same_training_curve(tmp_path):
    for method in ("full", "control"):
        plain = tmp_path / f"{method}-plain"
        chunked = tmp_path / f"{method}-chunked"
        run_inproc(plain, f"method.name={method}", "train.steps=3", "eval.at_start=false")
        run_inproc(chunked, f"method.name={method}", "train.steps=3", "eval.at_start=false", "train.loss_chunk=5")
        a, b = read_jsonl(plain / "metrics.jsonl"), read_jsonl(chunked / "metrics.jsonl")
        assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
        for ra, rb in zip(a, b):
            assert rb["ce_loss"] == pytest.approx(ra["ce_loss"], rel=1e-5)
            assert rb["divergence_loss"] == pytest.approx(ra["divergence_loss"], rel=1e-3, abs=1e-9)
    with pytest.raises(ConfigError, match="train.loss_chunk must be >= 0"):
        load_config(TINY, ["train.loss_chunk=-1"])
