"""training/cocomix_table.py: refuses without a named, probelab-trained SAE; runs NTP and both CoCoMix label
selections per seed at toy size and writes a table that names the SAE."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "cocomix_table.py"
TOY = {"teacher.model": "tiny-llama", "data.tokenizer": "tiny-llama", "data.train_tokens": 2048,
       "data.val_tokens": 512, "data.block_size": 32, "data.val_texts": 20, "data.vocab_size": 48,
       "train.micro_batch": 4, "train.steps": 2, "train.warmup": 1, "eval.every": 1, "train.checkpoint_every": 100,
       "student.hidden_size": 32, "student.intermediate_size": 64, "student.num_hidden_layers": 2,
       "student.insert_layer": 1, "student.topk": 4, "teacher.autocast_bf16": False, "train.precision": "no"}


@pytest.fixture(scope="module")
def trained_sae(tmp_path_factory):
    """A tiny SAE with the held-out quality file that `probelab sae train` writes."""
    from probelab.sae.evaluate import sae_quality
    from probelab.sae.tiny import tiny_sae
    from probelab.sae.train import PROBELAB_FILE

    path = tmp_path_factory.mktemp("sae") / "tiny"
    sae = tiny_sae(d_in=64, d_sae=128, k=8, hook_name="model.layers.1")
    sae.save_model(str(path))
    q = sae_quality(sae, torch.randn(200, 64, generator=torch.Generator().manual_seed(0)))
    (path / PROBELAB_FILE).write_text(json.dumps({"heldout_quality": q.as_dict()}))
    return path, q


def run(args, tmp_path):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_refuses_without_a_trained_sae(tmp_path):
    res = run(["--sae", str(tmp_path / "missing"), "--dry-run"], tmp_path)
    assert res.returncode != 0 and "is not an SAE folder" in res.stderr and "Traceback" not in res.stderr
    from probelab.sae.tiny import tiny_sae

    tiny_sae(d_in=64, d_sae=128, k=8, hook_name="model.layers.1").save_model(str(tmp_path / "untracked"))
    res = run(["--sae", str(tmp_path / "untracked"), "--dry-run"], tmp_path)
    assert res.returncode != 0 and "has no held-out quality" in res.stderr


def test_table_names_the_sae_and_has_every_method(trained_sae, tmp_path):
    sae, quality = trained_sae
    sets = [a for k, v in TOY.items() for a in ("--set", f"{k}={v}")]
    sets += ["--set", f"teacher.cache_dir={tmp_path / 'labels'}"]
    res = run(["--sae", str(sae), "--seeds", "0", "1", "--root", str(tmp_path / "runs"), "--name", "toy",
               "--results", str(tmp_path / "results"), "--config", "cocomix_cpu_seeds", "--jobs", "2", *sets], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    # --jobs 2: the first labelled run labels alone for one step, then resumes in the pool
    first = (tmp_path / "runs" / "cocomix" / "seed-0.log.txt").read_text()
    assert "run.stop_after=1" in first and "resumed from" in first
    md = (tmp_path / "results" / "toy.md").read_text()
    import hashlib

    digest = hashlib.sha256((sae / "sae_weights.safetensors").read_bytes()).hexdigest()[:16]
    assert digest in md and f"explained variance {quality.explained_variance:.3f}" in md
    for label in ("NTP (width-matched)", "CoCoMix (attribution labels)", "CoCoMix (activation labels, Fig. 6a)"):
        assert f"| {label} | 2 |" in md  # two seeds each, mean ± sd
    assert md.count(" ± ") >= 3
    rows = (tmp_path / "results" / "toy.csv").read_text().splitlines()
    assert len(rows) == 1 + 6
    # one teacher pass for both selections: the label cache was written once
    assert len(list((tmp_path / "labels").glob("shard-*.safetensors"))) >= 1


def test_jobs_run_in_parallel_after_the_label_pass(tmp_path):
    """The labelled run goes first and alone; a failed run is named; the pool splits the threads."""
    sys.path.insert(0, str(SCRIPT.parent))
    import cocomix_table

    def job(method, seed, code="import os; print(os.environ.get('PROBELAB_THREADS'))"):
        return method, seed, tmp_path / method / f"seed-{seed}", [sys.executable, "-c", code]

    jobs = [job("cocomix", 0), job("cocomix", 1), job("ntp", 0), job("ntp", 1, "import sys; sys.exit(3)")]
    failed = cocomix_table.run_jobs(jobs, 2)
    assert failed == [str(tmp_path / "ntp" / "seed-1")]
    threads = str(max(1, (__import__("os").cpu_count() or 1) // 2))
    assert (tmp_path / "cocomix" / "seed-0.log.txt").read_text().split() == ["None", threads]  # alone, then pooled
    assert (tmp_path / "ntp" / "seed-0.log.txt").read_text().split() == [threads]
    # when the label pass fails, the other labelled runs are not started (they would each label again)
    # and the NTP runs still are
    jobs = [job("cocomix", 0, "import sys; sys.exit(2)"), job("cocomix", 1), job("ntp", 0)]
    failed = cocomix_table.run_jobs([(m, s, tmp_path / "b" / m / f"seed-{s}", c) for m, s, _, c in jobs], 2)
    assert failed == [str(tmp_path / "b" / "cocomix" / "seed-0"), str(tmp_path / "b" / "cocomix" / "seed-1")]
    assert not (tmp_path / "b" / "cocomix" / "seed-1.log.txt").exists()
    assert (tmp_path / "b" / "ntp" / "seed-0.log.txt").read_text().split() == [threads]
