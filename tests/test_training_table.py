"""training/run_table.py (seeds -> one run folder per seed) and training/make_table.py (mean ± sd)."""
from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_run_table_writes_one_run_per_seed_and_method():
    proc = subprocess.run([sys.executable, "training/run_table.py", "--config", "tiny-test", "--root", "/tmp/t",
                           "--seeds", "3", "7", "--methods", "full", "lerp-mse", "--set", "eval.skill_n=200", "--set", "train.steps=10",
                           "--dry-run"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    runs = [ln.split("run.out_dir=")[1].split()[0] for ln in lines[:-1]]
    assert runs == [f"/tmp/t/{m}/seed-{s}" for s in (3, 7) for m in ("base", "full", "lerp-mse")]
    for ln in lines[:-1]:
        seed = ln.split("run.out_dir=")[1].split()[0].rsplit("-", 1)[1]
        assert ln.startswith("-m probelab.train.csft --config tiny-test ")
        assert f"--set run.seed={seed} " in ln and "--set eval.skill_n=200 --set train.steps=10 --set method.name=" in ln
    assert lines[0].endswith("--set train.steps=10 --set method.name=full --set train.steps=0 --set eval.at_start=true")
    assert lines[2].endswith("--set method.divergence=mse")
    assert lines[-1].endswith("make_table.py --root /tmp/t --out training/results --name cpu-small --config tiny-test")


def fake_run(folder: Path, seed: int, before: dict, after: dict | None, steps: int = 10) -> None:
    folder.mkdir(parents=True)
    evals = [{"step": 0, **before}] + ([{"step": steps, **after}] if after else [])
    (folder / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 1, "ce_loss": 1.0, "divergence_loss": 0.0}) + "\n")
    (folder / "config.json").write_text(json.dumps({"train": {"steps": steps, "micro_batch": 4, "lr": 1e-3},
                                                    "eval": {"skill_n": 200, "wiki_n": 100}}))
    if after:
        (folder / "summary.json").write_text(json.dumps({"steps": steps, "seconds": 10.0 + seed,
                                                         "tokens_per_second": 100.0, "trainable_params": 2_000_000}))


def test_make_table_gives_mean_and_sd_over_seeds(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    base = {0: 0.0, 1: 0.01, 2: 0.0}
    ppl0 = {0: 16.0, 1: 16.2, 2: 15.8}
    acc = {0: 0.90, 1: 0.80, 2: 0.85}
    ppl1 = {0: 17.0, 1: 17.5, 2: 16.0}
    for s in (0, 1, 2):
        before = {"skill_acc": base[s], "wiki_ppl": ppl0[s], "wiki_mc_acc": 0.6, "mmlu_acc": 0.25}
        fake_run(runs / "base" / f"seed-{s}", s, before, None)
        fake_run(runs / "full" / f"seed-{s}", s, before,
                 {"skill_acc": acc[s], "wiki_ppl": ppl1[s], "wiki_mc_acc": 0.55, "mmlu_acc": 0.25})
    fake_run(runs / "lerp-mse" / "seed-0", 0, {"skill_acc": 0.0, "wiki_ppl": 16.0, "wiki_mc_acc": 0.6, "mmlu_acc": 0.25},
             {"skill_acc": 0.8, "wiki_ppl": 16.1, "wiki_mc_acc": 0.6, "mmlu_acc": 0.25})
    proc = subprocess.run([sys.executable, "training/make_table.py", "--root", str(runs), "--out", str(out),
                           "--name", "t", "--config", "cpu-long"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["run"]: r for r in csv.DictReader((out / "t.csv").open())}
    full = rows["full"]
    assert full["seeds"] == "3" and rows["lerp-mse"]["seeds"] == "1"
    assert float(full["skill_acc_after"]) == pytest.approx(statistics.fmean(acc.values()))
    assert float(full["skill_acc_after_sd"]) == pytest.approx(statistics.stdev(acc.values()))
    change = [100 * (ppl1[s] / ppl0[s] - 1) for s in (0, 1, 2)]  # each seed against its own base run
    assert float(full["wiki_ppl_change_pct"]) == pytest.approx(statistics.fmean(change), abs=0.01)
    assert float(full["wiki_ppl_change_pct_sd"]) == pytest.approx(statistics.stdev(change), abs=0.01)
    assert rows["lerp-mse"]["skill_acc_after_sd"] == ""  # one seed: no sd
    per_seed = list(csv.DictReader((out / "t-seeds.csv").open()))
    assert [(r["run"], r["seed"]) for r in per_seed] == [("full", "0"), ("full", "1"), ("full", "2"), ("lerp-mse", "0")]
    md = (out / "t.md").read_text()
    assert "--seeds 0 1 2" in md and "mean ± the sample standard deviation" in md
    sd = statistics.stdev(acc.values())
    assert f"**{100 * statistics.fmean(acc.values()):.1f}% ± {100 * sd:.1f}**" in md
    assert "| Control LLM Lerp6 + MSE | 2.0M | 10 | 0.0% → **80.0%** |" in md


def test_make_table_reads_the_single_run_layout(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    before = {"skill_acc": 0.0, "wiki_ppl": 16.0, "wiki_mc_acc": 0.6, "mmlu_acc": 0.25}
    fake_run(runs / "base", 0, before, None)
    fake_run(runs / "full", 0, before, {"skill_acc": 0.9, "wiki_ppl": 20.0, "wiki_mc_acc": 0.5, "mmlu_acc": 0.25})
    proc = subprocess.run([sys.executable, "training/make_table.py", "--root", str(runs), "--out", str(out),
                           "--name", "t"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (out / "t.md").read_text()
    assert "| Full fine-tune | 2.0M | 10 | 0.0% → **90.0%** | 16.00 → **20.00** (+25.0%) |" in md and "±" not in md


def test_make_table_reports_differences_beyond_the_seed_spread(tmp_path):
    from scipy.stats import ttest_ind

    runs, out = tmp_path / "runs", tmp_path / "results"
    full_acc, lerp_acc = [0.90, 0.80, 0.85], [0.50, 0.52, 0.48]
    for s in (0, 1, 2):
        before = {"skill_acc": 0.0, "wiki_ppl": 16.0, "wiki_mc_acc": 0.6, "mmlu_acc": 0.25}
        fake_run(runs / "base" / f"seed-{s}", s, before, None)
        fake_run(runs / "full" / f"seed-{s}", s, before, {**before, "skill_acc": full_acc[s], "wiki_ppl": 18.0 + s / 10})
        fake_run(runs / "lerp-mse" / f"seed-{s}", s, before, {**before, "skill_acc": lerp_acc[s], "wiki_ppl": 16.1})
    proc = subprocess.run([sys.executable, "training/make_table.py", "--root", str(runs), "--out", str(out),
                           "--name", "t", "--config", "cpu-long"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (out / "t.md").read_text()
    p = ttest_ind(full_acc, lerp_acc, equal_var=False).pvalue
    assert p < 0.05
    assert f"| Full fine-tune | Control LLM Lerp6 + MSE | **+35.0 points (p {p:.2g})** |" in md


def test_results_headers_name_the_machine_and_commit(tmp_path, monkeypatch):
    import os
    import re

    from probelab.models.devices import cpu_model
    from probelab.train.provenance import git_commit, machine

    if not __import__("torch").cuda.is_available():
        monkeypatch.setenv("PROBELAB_THREADS", "1")
        assert machine() == f"{cpu_model()}, {os.cpu_count()} cores, 1 threads per run"
    assert re.fullmatch(r"[0-9a-f]{4,40}", git_commit())  # this checkout
    monkeypatch.chdir(tmp_path)  # not a git checkout
    assert git_commit() == "unknown"


def test_make_table_with_evals_switched_off(tmp_path):
    """Runs trained only for their checkpoints (eval.*_n=0): dashes, no traceback."""
    runs, out = tmp_path / "runs", tmp_path / "results"
    for s in (0, 1):
        fake_run(runs / "base" / f"seed-{s}", s, {}, None)
        fake_run(runs / "full" / f"seed-{s}", s, {}, {"skill_acc": None})
    proc = subprocess.run([sys.executable, "training/make_table.py", "--root", str(runs), "--out", str(out),
                           "--name", "t", "--config", "cpu-long"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "| Full fine-tune | 2.0M | 10 | – → **–** | – → **–** (–) |" in (out / "t.md").read_text()
