"""CoCoMix training (probelab.train.cocomix, the shared stack) end to end at toy size: single process +
exact resume, 2-process CPU DDP, the steer CLI."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "train_cocomix.py"


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    from probelab.sae.tiny import tiny_sae

    path = tmp_path_factory.mktemp("sae") / "tiny"
    tiny_sae(d_in=64, d_sae=128, k=8, hook_name="model.layers.1").save_model(str(path))
    return path


def toy_args(sae_dir, out, labels_dir, steps=4, extra=()):
    sets = {"teacher.model": "tiny-llama", "data.tokenizer": "tiny-llama", "teacher.sae": str(sae_dir),
            "teacher.cache_dir": str(labels_dir), "data.train_tokens": 2048, "data.val_tokens": 512,
            "data.block_size": 32, "data.val_texts": 20, "train.micro_batch": 4, "train.steps": steps,
            "train.warmup": 2, "eval.every": 2, "train.checkpoint_every": 100, "student.hidden_size": 32,
            "student.intermediate_size": 64, "student.num_hidden_layers": 2, "student.insert_layer": 1,
            "student.topk": 4, "run.progress": False, "teacher.autocast_bf16": False, "run.out_dir": str(out),
            "teacher.n_concepts": "null", "train.precision": "no"}
    args = ["--config", "cocomix_cpu"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args + list(extra)


def rows(out, name="metrics"):
    return list(csv.DictReader((Path(out) / f"{name}.csv").open()))


def test_train_resume_equals_uninterrupted(sae_dir, tmp_path):
    from safetensors.torch import load_file

    from probelab.train.cocomix import main

    labels = tmp_path / "labels"
    main(toy_args(sae_dir, tmp_path / "full", labels))
    main(toy_args(sae_dir, tmp_path / "split", labels, extra=["--set", "run.stop_after=2"]))
    assert [r["step"] for r in rows(tmp_path / "split")][-1] == "2"
    assert (tmp_path / "split" / "checkpoints" / "latest").read_text().strip() == "step-000002"
    assert not (tmp_path / "split" / "final").exists()
    main(toy_args(sae_dir, tmp_path / "split", labels))  # resumes at step 2
    a = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "final" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)  # the same stack: bit-exact resume
    full, split = rows(tmp_path / "full"), rows(tmp_path / "split")
    assert [x["step"] for x in split] == ["1", "2", "3", "4"]
    assert [x["loss"] for x in split] == [x["loss"] for x in full] and [x["lr"] for x in split] == [x["lr"] for x in full]
    ev = rows(tmp_path / "split", "evals")
    assert [x["step"] for x in ev] == ["0", "2", "4"] and float(ev[-1]["val_ppl"]) > 1
    assert ev == rows(tmp_path / "full", "evals")
    assert float(split[-1]["concept_loss"]) > 0
    from probelab.models import load_model
    from probelab.models.cocomix import CoCoMixForCausalLM

    model, _ = load_model(tmp_path / "full" / "final")
    assert isinstance(model, CoCoMixForCausalLM)
    # the NTP baseline trains from the same loop (the former script's --mode spelling still works)
    main(toy_args(sae_dir, tmp_path / "ntp", labels, steps=2, extra=["--mode", "ntp"]))
    assert float(rows(tmp_path / "ntp")[-1]["concept_loss"]) == 0


def test_two_process_cpu_ddp(sae_dir, tmp_path):
    launcher = Path(sys.executable).parent / "accelerate"
    cmd = [str(launcher), "launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT),
           *toy_args(sae_dir, tmp_path / "ddp", tmp_path / "labels", steps=3)]
    env = {**os.environ, "PROBELAB_THREADS": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    r = rows(tmp_path / "ddp")
    assert [x["step"] for x in r] == ["1", "2", "3"]
    assert float(rows(tmp_path / "ddp", "evals")[-1]["val_ppl"]) > 1
    assert (tmp_path / "ddp" / "final" / "model.safetensors").is_file()


def run_cli(argv, capsys):
    from probelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_steer_cli(tmp_path, sae_dir, capsys):
    from probelab.models.cocomix import save_cocomix, tiny_cocomix
    from probelab.models.tiny import tiny_tokenizer

    folder = save_cocomix(tiny_cocomix(), tmp_path / "cc", tiny_tokenizer())
    code, out, err = run_cli(["steer", "--model", str(folder), "--concept", "3", "--scale", "50",
                              "-n", "5", "hello"], capsys)
    assert code == 0, err
    assert "unsteered" in out and "steered" in out
    code, out, err = run_cli(["steer", "--model", str(folder), "--concept", "96", "hello"], capsys)
    assert code == 1 and err.strip() == "error: concept id 96 is out of range 0..95"
    code, out, err = run_cli(["steer", "--model", "tiny-llama", "--concept", "3", "hello"], capsys)
    assert code == 1 and "not a CoCoMix model; pass --sae" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(["steer", "--model", "tiny-llama", "--sae", str(sae_dir), "--concept", "3",
                              "--scale", "20", "-n", "5", "hello"], capsys)
    assert code == 0, err
    assert "SAE direction" in out
    code, out, err = run_cli(["steer", "--model", "tiny-llama", "--sae", str(sae_dir), "--concept", "128",
                              "hello"], capsys)
    assert code == 1 and "out of range" in err


def test_reduced_vocab_and_activation_labels(sae_dir, tmp_path):
    """data.vocab_size maps both students onto the most frequent ids; teacher.select=activation trains on
    the top latents by SAE activation, from the same cached teacher pass as the attribution labels."""
    from safetensors.torch import load_file

    from probelab.models import load_model
    from probelab.models.cocomix.vocab import ReducedVocab
    from probelab.sae import ConceptLabeler, load_sae
    from probelab.train.cocomix import main

    labels = tmp_path / "labels"
    extra = ["--set", "data.vocab_size=40", "--set", "teacher.select=activation"]
    summary = main(toy_args(sae_dir, tmp_path / "act", labels, steps=2, extra=extra))
    assert summary["vocab"]["size"] == 40 and 0 < summary["vocab"]["train_coverage"] < 1
    assert summary["embedding_parameters"] == 40 * 32 and summary["label_select"] == "activation"
    model, _ = load_model(tmp_path / "act" / "final")
    assert model.config.vocab_size == 40 and model.cocomix.teacher["select"] == "activation"
    vocab = ReducedVocab.load(tmp_path / "act")
    assert vocab.size == 40
    # the cache holds both selections; the activation set is the top-k_attr SAE activations
    shard = load_file(str(next(labels.glob("shard-*.safetensors"))))
    assert set(shard) == {"labels", "activation"} and not torch.equal(shard["labels"], shard["activation"])
    teacher, tok = load_model("tiny-llama")
    labeler = ConceptLabeler(teacher, load_sae(str(sae_dir)), k_attr=4)
    from probelab.train.cocomix import pack
    from probelab.sae.corpus import wiki_texts

    blocks = pack(wiki_texts(n_heldout=20, seed=0)[0], tok, 32, 2048)[: shard["labels"].shape[0]]
    att = labeler.attribution(blocks)
    assert torch.equal(shard["activation"].long(), labeler.labels_from(att, "activation"))
    assert torch.equal(shard["labels"].long(), labeler.labels_from(att, "attribution"))
    # the attribution run reuses that cache: no second teacher pass, same shard files
    before = {p.name: p.stat().st_mtime_ns for p in labels.glob("shard-*")}
    main(toy_args(sae_dir, tmp_path / "attr", labels, steps=2, extra=["--set", "data.vocab_size=40"]))
    assert {p.name: p.stat().st_mtime_ns for p in labels.glob("shard-*")} == before


def test_reduced_vocab_refuses_a_stream():
    from probelab.errors import ProbelabError
    from probelab.train.config import load_config

    with pytest.raises(ProbelabError, match="data.vocab_size needs a fixed corpus"):
        load_config("cocomix_cpu", ["data.source=openwebtext", "data.vocab_size=100"])
