"""Alignment of a real Control LLM (tiny Llama, 2 merged layers): init invariants, perturbation, cache."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from probelab.analysis import run_alignment
from probelab.models.control import ExpansionConfig, expand_model
from probelab.models.tiny import tiny_llama, tiny_tokenizer
from probelab.probes import load_probes

PAIRS = [
    ("gender", "king is to queen", "man is to woman"), ("gender", "actor is to actress", "waiter is to waitress"),
    ("tense", "see is to saw", "go is to went"), ("tense", "swim is to swam", "fly is to flew"),
    ("capital", "Paris is to France", "Tokyo is to Japan"), ("capital", "Rome is to Italy", "Madrid is to Spain"),
]


@pytest.fixture
def probe_file(tmp_path):
    f = tmp_path / "small.jsonl"
    f.write_text("\n".join(json.dumps({"id": f"p{i}", "category": c, "sentences": [s0, s1]})
                           for i, (c, s0, s1) in enumerate(PAIRS)))
    return f


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path / "cache"))


def control(num_expanded=2, interpolation="lerp"):
    return expand_model(tiny_llama(), ExpansionConfig(num_expanded=num_expanded, interpolation=interpolation)).eval()


def perturb(model, scale, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.control_layers:
            for p in layer.expanded.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def test_expanded_model_at_init_has_no_drift_at_any_layer():
    model, tok = control(num_expanded=4), tiny_tokenizer()
    res = run_alignment((model, tok), probes="analogies", umap=False, progress=False)
    assert res.summary["mode"] == "branches"
    assert [r["layer"] for r in res.layer_rows] == model.merged_layers == [1, 2, 3, 4]
    for r in res.layer_rows:
        assert r["cosine"] == pytest.approx(1.0, abs=1e-6)
        assert r["euclidean"] == pytest.approx(0.0, abs=1e-5)
        assert r["nn_retention"] == 1.0 and r["nn_retention_euclidean"] == 1.0
        assert r["pair_cosine_pretrained"] == pytest.approx(r["pair_cosine_expanded"], abs=1e-6)
        assert r["weight"] == pytest.approx(0.5)
    probes = res.tables["probes"]
    assert np.allclose(probes["cosine"], 1.0, atol=1e-6) and np.allclose(probes["euclidean"], 0.0, atol=1e-5)
    assert res.score == pytest.approx(1.0, abs=1e-6)


def test_drift_grows_with_the_perturbation(probe_file):
    tok = tiny_tokenizer()
    rows = []
    for scale in (0.0, 0.002, 0.01, 0.04):
        res = run_alignment((perturb(control(), scale), tok), probes=str(probe_file), umap=False, progress=False)
        eu = np.mean([r["euclidean"] for r in res.layer_rows])
        cos = np.mean([r["cosine"] for r in res.layer_rows])
        rows.append((scale, eu, cos, res.score))
    eus, coss, scores = [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]
    assert eus[0] == pytest.approx(0, abs=1e-5) and all(e > 0 for e in eus[1:])
    assert all(x < y for x, y in zip(eus, eus[1:])), rows
    assert all(x > y for x, y in zip(coss, coss[1:])), rows
    assert all(x > y for x, y in zip(scores, scores[1:])), rows


def test_rerun_reads_the_cache_and_a_weight_change_misses_it(probe_file):
    model, tok = perturb(control(), 0.01), tiny_tokenizer()
    first = run_alignment((model, tok), probes=str(probe_file), umap=False, progress=False)
    again = run_alignment((model, tok), probes=str(probe_file), umap=False, progress=False)
    assert not first.timings["captures_cached"] and again.timings["captures_cached"]
    assert again.layer_rows == first.layer_rows
    perturb(model, 0.01, seed=2)
    changed = run_alignment((model, tok), probes=str(probe_file), umap=False, progress=False)
    assert not changed.timings["captures_cached"] and changed.layer_rows != first.layer_rows


def test_fine_tune_vs_base_compares_every_block_output(probe_file):
    tok = tiny_tokenizer()
    base, tuned = tiny_llama(), tiny_llama()
    with torch.no_grad():
        for p in tuned.model.layers[2].parameters():
            p.add_(0.01 * torch.randn_like(p))
    res = run_alignment((tuned, tok), base=(base, tok), probes=str(probe_file), umap=False, progress=False)
    assert res.summary["mode"] == "models" and [r["layer"] for r in res.layer_rows] == [1, 2, 3, 4]
    eu = [r["euclidean"] for r in res.layer_rows]
    assert eu[0] == pytest.approx(0, abs=1e-6) and eu[1] == pytest.approx(0, abs=1e-6)  # before the tuned block
    assert eu[2] > 0 and eu[3] > 0
    assert load_probes(str(probe_file)).texts == list(res.tables["probes"].query("layer == 1 and token == 'last'")["text"])


def test_control_llm_against_its_base_through_the_merged_stream(probe_file):
    tok = tiny_tokenizer()
    res = run_alignment((control(), tok), base=(tiny_llama(), tok), probes=str(probe_file), umap=False, progress=False)
    assert res.summary["mode"] == "models" and len(res.layer_rows) == 4
    assert res.score == pytest.approx(1.0, abs=1e-6)


@pytest.mark.integration
def test_embedded_model_expanded_at_init_is_perfectly_aligned(smollm2, probe_file):
    import copy

    model, tok = smollm2
    ctrl = expand_model(copy.deepcopy(model), ExpansionConfig(num_expanded=3)).eval()
    res = run_alignment((ctrl, tok), probes=str(probe_file), umap=False, progress=False, use_cache=False)
    assert [r["layer"] for r in res.layer_rows] == ctrl.merged_layers and len(res.layer_rows) == 3
    assert all(r["cosine"] == pytest.approx(1.0, abs=1e-5) and r["nn_retention"] == 1.0 for r in res.layer_rows)
    assert res.score == pytest.approx(1.0, abs=1e-5)


def test_folder_fingerprint_follows_file_content(tmp_path):
    import os

    from probelab.analysis import cache

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    w = folder / "model.safetensors"
    w.write_bytes(b"a" * 1000)
    first = cache.folder_fingerprint(folder)
    assert cache.folder_fingerprint(folder) == first
    st = w.stat()
    w.write_bytes(b"b" * 1000)                       # same size; new content
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache.folder_fingerprint(folder) != first
    (folder / "tokenizer.json").write_text("{}")     # a new file changes it too
    assert len({first, cache.folder_fingerprint(folder)}) == 2
