"""Attribution sign made plain: ``--order signed|absolute|supporting``, firing density, dense latents."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from probelab.cli import main
from probelab.errors import ProbelabError
from probelab.models.tiny import tiny_llama, tiny_tokenizer
from probelab.sae.attribution import ConceptLabeler
from probelab.sae.density import DENSE_THRESHOLD, Density
from probelab.sae.inspect import ORDERS, inspect_text, rank_scores, score_meaning
from probelab.sae.tiny import tiny_sae

SCORES = torch.tensor([0.5, -2.0, 1.0, -0.1, 0.0, 3.0, -0.7])


@pytest.mark.parametrize("order, ids", [("signed", [5, 2, 0]), ("absolute", [5, 1, 2]), ("supporting", [1, 6, 3])])
def test_rank_scores_on_a_hand_made_vector(order, ids):
    values, idx = rank_scores(SCORES, 3, order)
    assert idx.tolist() == ids
    assert values.tolist() == [SCORES[i].item() for i in ids]  # values keep their sign


def test_rank_scores_hides_latents_and_refuses_bad_orders():
    hide = torch.zeros(7, dtype=torch.bool)
    hide[[5, 1]] = True
    assert rank_scores(SCORES, 3, "signed", hide)[1].tolist() == [2, 0, 4]
    assert rank_scores(SCORES, 3, "absolute", hide)[1].tolist() == [2, 6, 0]
    assert rank_scores(SCORES, 3, "supporting", hide)[1].tolist() == [6, 3, 4]
    assert rank_scores(SCORES, 10, "signed", hide)[1].shape == (5,)  # never returns a hidden latent
    with pytest.raises(ProbelabError, match="unknown order 'loudest'"):
        rank_scores(SCORES, 3, "loudest")
    with pytest.raises(ProbelabError, match="every latent is hidden"):
        rank_scores(SCORES, 3, "signed", torch.ones(7, dtype=torch.bool))


def test_score_meaning_says_positive_raises_the_loss():
    assert "positive = the concept raises the loss" in score_meaning("sequence")
    assert "next token" in score_meaning("next_token")


def fake_density(d_sae: int, dense_ids: list[int]) -> Density:
    counts = np.full(d_sae, 3, dtype=np.int64)          # 3 of 1000 tokens: 0.3%
    counts[dense_ids] = 400                              # 40%: dense
    counts[7] = 100                                      # exactly 10%: not dense (strictly above)
    return Density(counts, 1000, 10, 2)


def test_inspect_orders_match_the_scores_and_mark_density():
    torch.manual_seed(0)
    model, tok, sae = tiny_llama(), tiny_tokenizer(), tiny_sae()
    text = "the cat sat on the mat"
    ids = tok(text, return_tensors="pt")["input_ids"]
    scores = ConceptLabeler(model, sae, k_attr=4).scores(ids, torch.ones_like(ids))[0]
    for order in ORDERS:
        out = inspect_text(model, tok, sae, text, top=4, order=order)
        assert out["order"] == order and "raises the loss" in out["score_meaning"]
        key = {"signed": lambda v: -v, "absolute": lambda v: -abs(v), "supporting": lambda v: v}[order]
        for t, row in enumerate(out["tokens"][:-1]):  # the last token has no next token (all scores 0)
            s = scores[t].tolist()
            want = sorted(range(len(s)), key=lambda i: key(s[i]))[:4]
            got = [c["id"] for c in row["by_attribution"]]
            assert [s[i] for i in got] == pytest.approx([s[i] for i in want], abs=1e-6)
    dense_ids = [int(i) for i in scores[0].abs().topk(3).indices]  # dense latents that would rank high
    density = fake_density(int(sae.cfg.d_sae), dense_ids)
    out = inspect_text(model, tok, sae, text, top=4, order="absolute", density=density)
    seen = [c for row in out["tokens"] for key in ("by_activation", "by_attribution") for c in row[key]]
    for c in seen:
        assert c["density"] == pytest.approx(density.counts[c["id"]] / 1000)
        assert c["dense"] == (c["density"] > DENSE_THRESHOLD)
    assert any(c["dense"] for c in seen) and out["dense_threshold"] == DENSE_THRESHOLD
    hidden = inspect_text(model, tok, sae, text, top=4, order="absolute", density=density, hide_dense=True)
    seen = [c for row in hidden["tokens"] for key in ("by_activation", "by_attribution") for c in row[key]]
    assert seen and not any(c["dense"] for c in seen) and not {c["id"] for c in seen} & set(dense_ids)
    with pytest.raises(ProbelabError, match="needs their firing density"):
        inspect_text(model, tok, sae, text, hide_dense=True)
    with pytest.raises(ProbelabError, match="needs signed scores"):
        inspect_text(model, tok, sae, text, order="supporting", sign="absolute")


def run_cli(args):
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_cli_order_density_and_hide_dense(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path / "cache"))
    tiny_sae().save_model(tmp_path / "s")
    base = ["concepts", "--model", "tiny-llama", "--sae", tmp_path / "s", "--no-labels", "--json", "hey there"]
    assert run_cli(base + ["--order", "supporting"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["order"] == "supporting"
    first = out["tokens"][0]["by_attribution"]
    assert [c["value"] for c in first] == sorted(c["value"] for c in first) and first[0]["value"] < 0
    assert all("density" in c and "dense" in c for row in out["tokens"] for c in row["by_activation"])
    dense_seen = {c["id"] for row in out["tokens"] for k in ("by_activation", "by_attribution") for c in row[k]
                  if c["dense"]}
    assert run_cli(base + ["--hide-dense"]) == 0
    out = json.loads(capsys.readouterr().out)
    shown = {c["id"] for row in out["tokens"] for k in ("by_activation", "by_attribution") for c in row[k]}
    assert out["hide_dense"] and not shown & dense_seen
    assert run_cli(base + ["--order", "loudest"]) == 1
    assert capsys.readouterr().err.strip() == "error: unknown --order 'loudest'; choose one of signed, absolute, supporting"
    assert run_cli(base + ["--hide-dense", "--no-density"]) == 1
    assert "needs the firing density" in capsys.readouterr().err
    # the table says what the sign means
    assert run_cli(base[:-2] + ["hey"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "positive = the concept raises the loss" in printed and "ranked signed" in printed


def test_app_concepts_page_says_what_the_sign_means_and_hides_dense(tmp_path, monkeypatch):
    from pathlib import Path

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PROBELAB_APP_MODEL", "tiny-llama")
    monkeypatch.setenv("PROBELAB_APP_UMAP", "0")
    monkeypatch.setenv("PROBELAB_APP_ROOTS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "probelab" / "app" / "main.py"),
                           default_timeout=240)
    at.run()
    at.switch_page("views/concepts.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("positive = the concept raises the loss" in i.value for i in at.info)
    assert any("DENSE = the latent fires on more than 10%" in c.value for c in at.caption)
    ranked = at.dataframe(key="cc_pick").value
    assert {"fires on", "dense"} <= set(ranked.columns)
    at.sidebar.selectbox(key="cc_order").set_value("supporting").run()
    assert not at.exception
    assert any("ranked supporting" in c.value for c in at.caption)
    at.sidebar.checkbox(key="cc_hide_dense").check().run()
    assert not at.exception
    ranked = at.dataframe(key="cc_pick").value
    assert len(ranked) and not ranked["dense"].any()
    st.cache_data.clear()
    st.cache_resource.clear()
