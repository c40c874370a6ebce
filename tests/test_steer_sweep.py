"""Steering sweeps: scales, the dose-response of a planted SAE direction, scale 0 = unsteered, CLI rows."""
from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from probelab.errors import ProbelabError
from probelab.models.tiny import tiny_llama, tiny_tokenizer
from probelab.sae.tiny import tiny_sae
from probelab.steering_sweep import (check_scales, concept_label, parse_sweep, steering_sweep, sweep_html,
                                     sweep_table_rows, write_sweep)

C = 7


def planted_sae(model, concept: int = C, gain: float = 5.0, seed: int = 1):
    """A tiny SAE whose latent ``concept`` reads and writes one known unit direction ``e``; every other
    encoder column is made orthogonal to ``e``, so steering along ``e`` moves only this latent."""
    sae = tiny_sae(d_in=int(model.config.hidden_size), hook_name="model.layers.1", seed=seed)
    g = torch.Generator().manual_seed(seed + 10)
    e = torch.randn(sae.cfg.d_in, generator=g)
    e = e / e.norm()
    with torch.no_grad():
        W = sae.W_enc  # [d_in, d_sae]
        W.sub_(torch.outer(e, e @ W))  # project e out of every column
        W[:, concept] = gain * e
        sae.b_enc[concept] = 0.0
        sae.W_dec[concept] = e
    return sae, e


@pytest.fixture(scope="module")
def model_tok():
    return tiny_llama(), tiny_tokenizer()


def test_parse_and_check_scales():
    assert parse_sweep("0:80:5") == [0.0, 20.0, 40.0, 60.0, 80.0]
    assert parse_sweep(" -1:1:3 ") == [-1.0, 0.0, 1.0]
    assert parse_sweep("2:2:1") == [2.0]
    for bad, msg in [("0:80", "START:STOP:N"), ("a:1:2", "numbers"), ("0:1:x", "whole number"),
                     ("0:1:0", "at least 1"), ("0:inf:3", "not finite"), ("nan:1:2", "not finite")]:
        with pytest.raises(ProbelabError, match=msg):
            parse_sweep(bad)
    with pytest.raises(ProbelabError, match="not finite"):
        check_scales([1.0, float("inf")])
    with pytest.raises(ProbelabError, match="no steering scale"):
        check_scales([])
    with pytest.raises(ProbelabError, match="at most"):
        parse_sweep("0:1:1000")


def test_planted_direction_activation_is_monotone_in_the_scale(model_tok):
    model, tok = model_tok
    sae, e = planted_sae(model)
    scales = parse_sweep("0:80:9")
    sweep = steering_sweep(model, tok, "The cat sat", C, scales, sae=sae, max_new_tokens=5, label="planted",
                           targets=["a", " "])
    acts = [r.activation for r in sweep.rows]
    assert all(b >= a for a, b in zip(acts, acts[1:])), acts
    assert acts[-1] > acts[0] and acts[-1] > 0
    # where it is active, the activation moves by exactly gain x the added scale (decoder is a unit vector)
    live = [(r.scale, r.activation) for r in sweep.rows if r.activation > 0]
    assert len(live) >= 2
    (s0, a0), (s1, a1) = live[0], live[-1]
    assert a1 - a0 == pytest.approx(5.0 * (s1 - s0), rel=1e-4)
    assert all(set(r.targets) == {"a", " "} and all(0 <= p <= 1 for p in r.targets.values()) for r in sweep.rows)
    assert sweep.rows[-1].kl > 0 and all(r.kl >= 0 for r in sweep.rows)


def test_scale_zero_row_is_unsteered_generation(model_tok):
    from probelab.app_support.steering import greedy
    from probelab.sae.evaluate import site_states

    model, tok = model_tok
    sae, _ = planted_sae(model)
    prompt = "Hello world"
    sweep = steering_sweep(model, tok, prompt, C, [0.0, 30.0], sae=sae, max_new_tokens=8, label="planted")
    zero = sweep.rows[0]
    assert zero.text == sweep.unsteered == greedy(model, tok, prompt, 8)
    assert zero.kl == 0.0 and not zero.changed
    # the activation at scale 0 equals the SAE's encoding of the plain state at the prompt's last token
    h = site_states(model, tok, [prompt], 2, skip_first=False)[0]
    assert zero.activation == pytest.approx(float(sae.encode(h[-1:])[0, C]), abs=1e-5)
    # perplexity of the unsteered continuation under the unsteered model, by hand
    full = tok(prompt + zero.text, return_tensors="pt")["input_ids"]
    n = tok(prompt, return_tensors="pt")["input_ids"].shape[1]
    with torch.no_grad():
        logp = torch.log_softmax(model(full).logits[0, n - 1:-1], -1)
    nll = -logp.gather(-1, full[0, n:, None]).mean()
    assert zero.perplexity == pytest.approx(math.exp(float(nll)), rel=1e-4)


def test_cocomix_sweep_reads_the_steered_logit():
    from probelab.models.cocomix import tiny_cocomix

    model, tok = tiny_cocomix(), tiny_tokenizer()
    prompt = "abc"
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        z = model(ids).concept_logits[0, -1]
    c = int(z.argmax())
    sweep = steering_sweep(model, tok, prompt, c, [1.0, 2.0, -3.0], max_new_tokens=4, label="x")
    assert sweep.kind == "cocomix" and sweep.measure == "logit"
    one = sweep.rows[0]
    assert one.text == sweep.unsteered and one.kl == 0.0 and one.chosen  # factor 1 = unsteered
    for r in sweep.rows:
        assert r.logit == pytest.approx(r.scale * float(z[c]), rel=1e-5)
    assert sweep.rows[2].chosen is False  # a large negative logit leaves the TopK
    with pytest.raises(ProbelabError, match="out of range"):
        steering_sweep(model, tok, prompt, 10_000, [1.0], label="x")


def test_errors(model_tok):
    model, tok = model_tok
    sae = tiny_sae()
    with pytest.raises(ProbelabError, match="empty"):
        steering_sweep(model, tok, "  ", 1, [1.0], sae=sae, label="x")
    with pytest.raises(ProbelabError, match="give an SAE"):
        steering_sweep(model, tok, "hi", 1, [1.0], label="x")
    with pytest.raises(ProbelabError, match="out of range"):
        steering_sweep(model, tok, "hi", 128, [1.0], sae=sae, label="x")
    with pytest.raises(ProbelabError, match="not finite"):
        steering_sweep(model, tok, "hi", 1, [float("nan")], sae=sae, label="x")


def test_label_lookup_and_html_export(model_tok, tmp_path):
    from probelab.sae.labels import ConceptInfo, ConceptLabels

    model, tok = model_tok
    labels = ConceptLabels([ConceptInfo(i, f"lab{i}", 0.1) for i in range(128)])
    assert concept_label(model, tok, 4, labels=labels) == "lab4"
    assert concept_label(model, tok, 400, labels=labels).startswith("(no label")
    assert concept_label(model, tok, 4).startswith("(no label")
    sae, _ = planted_sae(model)
    sweep = steering_sweep(model, tok, "ab", C, [0.0, 40.0], sae=sae, max_new_tokens=3, label="lab7",
                           targets=["x"])
    cols, rows = sweep_table_rows(sweep)
    assert cols[:2] == ["scale", "activation"] and "p('x')" in cols and len(rows) == 2
    page = sweep_html(sweep, "tiny-llama")
    assert "<script src" not in page and "lab7" in page and 'id="fig-sweep"' in page
    out = write_sweep(sweep, tmp_path / "sw")
    data = json.loads((out / "sweep.json").read_text())
    assert data["label"] == "lab7" and [r["scale"] for r in data["rows"]] == [0.0, 40.0]


def run_cli(args, capsys):
    from probelab.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_sweep_json_rows_and_label(monkeypatch, capsys):
    from probelab import steering_sweep as sw

    monkeypatch.setattr(sw, "concept_label", lambda *a, **k: "LABEL")  # skip building corpus labels
    base = ["steer", "Hello", "--model", "tiny-llama", "--sae", "tiny", "--concept", "3", "--device", "cpu"]
    code, out, err = run_cli(base + ["--sweep", "0:80:5", "--json", "-n", "4"], capsys)
    assert code == 0, err
    rows = json.loads(out.strip().splitlines()[-1])
    assert [x["scale"] for x in rows] == [0.0, 20.0, 40.0, 60.0, 80.0]
    assert all(x["label"] == "LABEL" and x["concept"] == 3 for x in rows)
    code, out, err = run_cli(base + ["--sweep", "0:80:3", "-n", "3", "--target", "e"], capsys)
    assert code == 0 and "LABEL" in out and "p('e')" in out and "kl: KL(steered" in out
    code, out, err = run_cli(base + ["-n", "3"], capsys)  # a single steered run names the label too
    assert code == 0 and "LABEL" in out
    code, out, err = run_cli(base + ["--sweep", "0:inf:2"], capsys)
    assert code == 1 and "not finite" in err
    code, out, err = run_cli(base + ["--target", "e"], capsys)
    assert code == 1 and "add --sweep" in err
    from probelab.models import load_model

    _, tok = load_model("tiny-llama")
    long = next(w for w in ("hello world", "a bc d", "xyzzy quux") if len(tok(w, add_special_tokens=False)["input_ids"]) > 1)
    code, out, err = run_cli(base + ["--sweep", "0:80:2", "--target", long], capsys)
    assert code == 1 and "give a single token" in err and "Traceback" not in err
