"""The shared training stack through `probelab train` in a subprocess: run-folder rules, finite final
model, validated numbers, finished runs, config lookup; the LR schedule against the former formula."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from probelab.train.config import ConfigError, load_config

PROBELAB = Path(sys.executable).parent / "probelab"
QUIET = ["eval.wiki_n=0", "eval.mmlu_n=0", "eval.wiki_mc_n=0", "eval.skill_n=2", "eval.max_new_tokens=2",
         "run.progress=false"]


def train(cwd: Path, out: Path | str, *sets: str, extra: tuple[str, ...] = (), config: str = "tiny-test"):
    """`probelab train --config tiny-test` (the packaged config, by name) run from ``cwd``."""
    cmd = [str(PROBELAB), "train", "--config", config, "--set", f"run.out_dir={out}"]
    for s in (*QUIET, *sets):
        cmd += ["--set", s]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PROBELAB_THREADS": "1"}
    return subprocess.run([*cmd, *extra], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def one_error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), proc.stderr[-1500:]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    return errors[0]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 4-step tiny run (checkpoints at 2 and 4, final/), made once; copy it before changing it."""
    root = tmp_path_factory.mktemp("finished")
    proc = train(root, root / "run", "train.steps=4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "run"


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---- the LR schedule ---------------------------------------------------------------------------
def old_lr_at(step: int, t) -> float:
    """The hand-written schedule both loops used before (linear warmup, cosine to lr * min_lr_ratio)."""
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    progress = (step - t.warmup) / max(1, t.steps - t.warmup)
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


@pytest.mark.parametrize("sets", [
    ["train.steps=6", "train.warmup=2", "train.lr=1e-3"],          # tiny-test
    ["train.steps=300", "train.warmup=10"],                         # the csft defaults
    ["train.steps=240", "train.warmup=20", "train.lr=1.5e-3"],      # cocomix_cpu
    ["train.steps=4000", "train.warmup=130", "train.min_lr_ratio=0.0"],
    ["train.steps=10", "train.warmup=0", "train.min_lr_ratio=1.0"],
    ["train.steps=10", "train.warmup=1"],
    ["train.steps=3", "train.warmup=5"],                            # all warmup
])
def test_lr_schedule_equals_the_former_formula_and_resumes(sets):
    from probelab.train.schedule import current_lr, make_scheduler

    t = load_config("tiny-test", sets).train
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=123.0)  # the schedule sets the lr itself
    sched = make_scheduler(opt, t)
    seen = []
    for step in range(t.steps):
        seen.append(current_lr(opt))
        assert current_lr(opt) == pytest.approx(old_lr_at(step, t), rel=1e-9, abs=1e-15), step
        opt.step()
        sched.step()
    # resume: a fresh optimizer whose groups hold the last step's lr, fast-forwarded to each step
    for start in sorted({0, 1, t.warmup, t.steps // 2, t.steps - 1} & set(range(t.steps))):
        opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=seen[-1])
        make_scheduler(opt2, t, start_step=start)
        assert current_lr(opt2) == seen[start]  # bit-identical to the uninterrupted run


# ---- run folder rules ------------------------------------------------------------------------------
def test_resume_never_refuses_a_non_empty_folder_and_start_over_moves_it_aside(tmp_path, finished):
    run = copy_run(finished, tmp_path / "run")
    before = tree(run)
    proc = train(tmp_path, run, "train.steps=4", "run.resume=never")
    assert proc.returncode == 1
    assert one_error_line(proc) == (f"error: run.resume=never but {run} is not empty; pass --start-over to move it "
                                    "aside (to run.old-<time>) or choose another run.out_dir")
    assert tree(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # a folder of unrelated files is refused under resume=auto too (nothing is written into it)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    proc = train(tmp_path, other, "train.steps=2")
    assert proc.returncode == 1 and "holds files that are not a checkpoint of this config" in one_error_line(proc)
    assert tree(other) == {"mine.txt": b"keep me"}
    # --start-over: the old run is moved aside whole, the new run starts in an empty folder
    proc = train(tmp_path, run, "train.steps=2", "run.resume=never", extra=("--start-over",))
    assert proc.returncode == 0, proc.stderr[-2000:]
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1 and tree(moved[0]) == before
    assert f"moved the previous run in {run} to {moved[0]}" in proc.stdout
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-000002"]
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    assert [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())] == [1, 2]


def test_pruning_keeps_the_current_runs_checkpoints(tmp_path, finished):
    run = tmp_path / "run"
    proc = train(tmp_path, run, "train.steps=6", "run.kill_at_step=3")
    assert proc.returncode == -9
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000002"
    # a checkpoint of another run with a higher step number in the same folder (the case)
    foreign = run / "checkpoints" / "step-000030"
    shutil.copytree(finished / "checkpoints" / "step-000004", foreign)
    state = json.loads((foreign / "state.json").read_text())
    state["step"] = 30
    (foreign / "state.json").write_text(json.dumps(state))
    foreign_files = tree(foreign)
    proc = train(tmp_path, run, "train.steps=6")
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["latest", "step-000004", "step-000006", "step-000030"]  # keep_checkpoints=2 of this run
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000006"
    assert tree(foreign) == foreign_files  # another run's checkpoint is never touched
    ids = {json.loads((run / "checkpoints" / n / "state.json").read_text())["run_id"] for n in names[1:3]}
    assert len(ids) == 1 and ids != {state["run_id"]}


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path):
    run = tmp_path / "run"
    proc = train(tmp_path, run, "train.steps=3", "run.kill_at_step=1")
    assert proc.returncode == -9 and (run / "config.json").is_file() and not (run / "checkpoints").exists()
    proc = train(tmp_path, run, "train.steps=3", "train.lr=5e-4")  # another config: refused, folder kept
    assert proc.returncode == 1 and "holds files that are not a checkpoint of this config" in one_error_line(proc)
    proc = train(tmp_path, run, "train.steps=3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3]
    assert (run / "final").is_dir()


def test_resuming_a_finished_run_is_a_no_op(tmp_path, finished):
    run = copy_run(finished, tmp_path / "run")
    before = tree(run)
    for steps in (4, 2):  # the same length, and fewer steps than it ran (was "done: -2 steps")
        proc = train(tmp_path, run, f"train.steps={steps}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"[train] {run} already finished at step 4 (train.steps={steps}); nothing to do" in proc.stdout
        assert "done:" not in proc.stdout
        assert tree(run) == before  # summary.json, logs and checkpoints untouched


def test_a_non_finite_weight_means_no_final_model(tmp_path):
    """The loss stays finite (the NaN sits in the embedding row of a character the data never uses,
    of an untied model), the run trains, and still no final model is written."""
    from probelab.models.tiny import tiny_qwen2, tiny_tokenizer

    model, tok = tiny_qwen2(), tiny_tokenizer()
    row = tok.convert_tokens_to_ids("Z")  # add3 prompts: "Question: What is 347 + 589?\nAnswer: 936"
    with torch.no_grad():
        model.model.embed_tokens.weight[row] = float("nan")
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    run = tmp_path / "run"
    proc = train(tmp_path, run, f"model.name={base}", "train.steps=2", "eval.skill_n=0")
    assert proc.returncode == 1
    assert one_error_line(proc) == ("error: step 2: model.model.embed_tokens.weight is not finite (nan or inf); "
                                    "the final model was not written")
    assert not (run / "final").exists() and not (run / "summary.json").exists()
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000002"  # the trained part is kept


def test_a_diverged_update_stops_at_its_step(tiny):
    from accelerate import Accelerator

    from probelab.train.checkpoint import NonFiniteError
    from probelab.train.run import check_params_finite

    model, _ = tiny
    model.requires_grad_(False)
    model.model.layers[1].requires_grad_(True)
    acc = Accelerator(cpu=True)
    check_params_finite(model, 7, acc)
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight[0, 0] = float("nan")  # frozen: not this check's business
    check_params_finite(model, 7, acc)
    with torch.no_grad():
        model.model.layers[1].self_attn.k_proj.weight[1, 2] = float("inf")
    with pytest.raises(NonFiniteError, match=r"^step 7: parameter model.layers.1.self_attn.k_proj.weight is not "
                                             r"finite \(nan or inf\) after the update; the final model was not written"):
        check_params_finite(model, 7, acc)


def test_the_finite_guard_names_the_first_bad_tensor(tiny):
    from probelab.train.checkpoint import NonFiniteError
    from probelab.train.run import check_finite_model

    model, _ = tiny
    check_finite_model(model, 3)
    with torch.no_grad():
        model.model.layers[2].mlp.up_proj.weight[0, 0] = float("inf")
        model.model.layers[3].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"^step 3: model.layers.2.mlp.up_proj.weight is not finite"):
        check_finite_model(model, 3)


BAD_NUMBERS = [
    ("train.lr=.inf", "train.lr must be a finite number, got inf"),
    ("train.lr=0", "train.lr must be in (0, 1], got 0.0"),
    ("train.lr=-1e-3", "train.lr must be in (0, 1], got -0.001"),
    ("train.lr=1e38", "train.lr must be in (0, 1], got 1e+38"),
    ("train.min_lr_ratio=.nan", "train.min_lr_ratio must be a finite number, got nan"),
    ("train.min_lr_ratio=1.5", "train.min_lr_ratio must be in [0, 1], got 1.5"),
    ("train.grad_clip=-1", "train.grad_clip must be in [0, inf), got -1.0"),
    ("train.grad_clip=.nan", "train.grad_clip must be a finite number, got nan"),
    ("train.weight_decay=-0.1", "train.weight_decay must be in [0, inf), got -0.1"),
    ("train.warmup=-1", "train.warmup must be >= 0, got -1"),
    ("train.steps=-5", "train.steps must be >= 0, got -5"),
    ("train.micro_batch=0", "train.micro_batch must be >= 1, got 0"),
    ("train.grad_accum=0", "train.grad_accum must be >= 1, got 0"),
    ("train.log_every=0", "train.log_every must be >= 1, got 0"),
    ("train.betas=[0.9, 1.0]", "train.betas must be two numbers in [0, 1), got [0.9, 1.0]"),
    ("run.seed=-1", "run.seed must be in [0, 2^63), got -1"),
    ("run.seed=1.5", "config key run.seed: 1.5 is not an integer"),
    ("train.steps=.inf", "config key train.steps: inf is not an integer"),
    ("eval.batch_size=0", "eval.batch_size must be >= 1, got 0"),
    ("method.alpha=.nan", "method.alpha must be a finite number >= 0 or 'dynamic', got nan"),
]


@pytest.mark.parametrize("override,message", BAD_NUMBERS)
def test_every_optimiser_number_is_validated_in_one_line(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("tiny-test", [override])
    assert str(e.value) == message


def test_cocomix_numbers_use_the_same_validation():
    with pytest.raises(ConfigError, match=r"^train.min_lr_ratio must be a finite number, got nan$"):
        load_config("cocomix_cpu", ["train.min_lr_ratio=.nan"])
    with pytest.raises(ConfigError, match=r"^student.insert_layer must be in \[1, 4\]"):
        load_config("cocomix_cpu", ["student.insert_layer=9"])
    with pytest.raises(ConfigError, match=r"^unknown method 'gpt'; known: cocomix, ntp$"):
        load_config("cocomix_cpu", ["method.name=gpt"])


def test_bad_numbers_and_config_paths_through_the_cli(tmp_path):
    proc = train(tmp_path, tmp_path / "r", "train.lr=.nan", "train.steps=1")
    assert proc.returncode == 1 and one_error_line(proc) == "error: train.lr must be a finite number, got nan"
    assert not (tmp_path / "r").exists()  # refused before anything is written
    folder = tmp_path / "configs"
    folder.mkdir()
    proc = train(tmp_path, tmp_path / "r", config=str(folder))
    assert proc.returncode == 1
    assert one_error_line(proc) == f"error: config {folder} is a directory, not a config file (give a .yaml or .toml file)"
    proc = train(tmp_path, tmp_path / "r", config="no-such-config")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert line.startswith("error: config file no-such-config does not exist (built-in configs: ") and "tiny-test" in line
    proc = train(tmp_path, ".", extra=("--start-over",))  # never moves the current folder (or home) aside
    assert proc.returncode == 1 and one_error_line(proc).startswith("error: run.out_dir . is the current folder")
    proc = train(tmp_path, tmp_path / "r", "run.resume=must")
    assert proc.returncode == 1
    assert one_error_line(proc) == f"error: run.resume=must but {tmp_path / 'r' / 'checkpoints'} has no checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs"]


# ---- the app -------------------------------------------------------------------------------------
def test_the_app_offers_training_only_when_local_or_allowed(monkeypatch):
    from streamlit import config

    from probelab.app_support import training
    from probelab.errors import ProbelabError

    monkeypatch.delenv("PROBELAB_APP_TRAINING", raising=False)
    for address, ok in (("127.0.0.1", True), ("localhost", True), ("0.0.0.0", False), ("192.168.1.5", False),
                        (None, False)):
        monkeypatch.setattr(config, "get_option", lambda key, a=address: a if key == "server.address" else None)
        assert training.allowed() is ok and training.available() is ok, address
    with pytest.raises(ProbelabError, match="training from the app is off: the app listens on every interface"):
        training.start("runs/x")
    monkeypatch.setenv("PROBELAB_APP_TRAINING", "1")
    assert training.available()
    argv = training.smoke_argv("/tmp/out")
    assert argv[1:3] == ["-m", "probelab.train.csft"] and argv[4].endswith("cpu-smoke.yaml")
