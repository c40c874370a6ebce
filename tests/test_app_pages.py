"""Every page of the Streamlit app under streamlit.testing (AppTest), on the tiny random models.

The app reads its model from PROBELAB_APP_MODEL, so these runs use ``tiny-llama`` and the tiny random
SAE; the tests share one probelab cache (a stored result is a valid result) and clear Streamlit's caches.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from probelab.models.control import ExpansionConfig, expand_model, save_control
from probelab.models.tiny import tiny_llama, tiny_tokenizer

APP = str(Path(__file__).resolve().parents[1] / "probelab" / "app" / "main.py")
SMALL = "\n".join(["king is to queen | man is to woman", "Paris is to France | Tokyo is to Japan",
                   "see is to saw | go is to went", "dog is to puppy | cat is to kitten"])


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One probelab cache for this module: concept labels and stored results are computed once."""
    return tmp_path_factory.mktemp("app-cache")


@pytest.fixture(autouse=True)
def tiny_app(tmp_path, monkeypatch, shared_cache):
    monkeypatch.setenv("PROBELAB_CACHE", str(shared_cache))
    monkeypatch.setenv("PROBELAB_APP_MODEL", "tiny-llama")
    monkeypatch.setenv("PROBELAB_APP_UMAP", "0")
    monkeypatch.setenv("PROBELAB_APP_ROOTS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    return at


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def metrics(at: AppTest) -> dict:
    return {m.label: m.value for m in at.metric}


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def control_folder(path, scale=0.0):
    model = expand_model(tiny_llama(), ExpansionConfig(num_expanded=2)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.control_layers:
            for p in layer.expanded.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g))
    return save_control(model, path, tiny_tokenizer())


def paste_probes(at: AppTest, text: str) -> None:
    at.sidebar.radio(key="probe_how").set_value("paste sentences").run()
    at.sidebar.text_area(key="probe_text").input(text)


# ---- alignment ---------------------------------------------------------------------------------
def test_alignment_opens_on_panel_a_with_plots_tables_and_downloads(monkeypatch):
    monkeypatch.setenv("PROBELAB_APP_TRAINING", "1")  # AppTest has no server address: allow the smoke-run button
    at = start()
    ok(at)
    assert at.title[0].value == "Hidden-state alignment"
    m = metrics(at)
    assert m["alignment score"] == "1.0000" and m["direction"] == "1.0000" and m["neighbourhood"] == "1.0000"
    specs = charts(at)
    assert len(specs) == 2  # drift curves and pair heatmaps (UMAP off here)
    cosine = next(t for t in specs[0]["data"] if t.get("name") == "cosine")
    assert cosine["x"] == [2, 4] and cosine["y"] == pytest.approx([1.0, 1.0], abs=1e-6)
    nn = at.dataframe[0].value
    assert len(nn) == 120 and (nn["retention@k"] == 1.0).all() and (nn["lost in B"] == "").all()
    assert list(at.dataframe[1].value["layer"]) == [2, 4]
    labels = {d.label for d in at.get("download_button")}
    assert {"metrics.json", "report.html", "layers.csv", "probes.csv", "pairs.csv", "neighbors.csv"} <= labels
    assert [r.label for r in at.sidebar.radio][:1] == ["source"]
    assert at.sidebar.text_input(key="at_base").value == "tiny-llama"
    assert at.sidebar.button(key="train_go").label == "start the CPU smoke run"  # the cpu-smoke config exists


def test_alignment_on_pasted_probes_and_an_empty_probe_list():
    at = start()
    paste_probes(at, "   \n")
    at.sidebar.button(key="align_go").click().run()
    ok(at)
    assert any("probe list is empty" in e.value for e in at.error)
    assert not at.metric  # nothing stale is shown as if it were the result
    at.sidebar.text_area(key="probe_text").input(SMALL)
    at.sidebar.button(key="align_go").click().run()
    ok(at)
    assert not at.error
    assert metrics(at)["alignment score"] == "1.0000"
    assert "8 sentences, 4 pairs" in at.caption[-1].value or any("8 sentences, 4 pairs" in c.value for c in at.caption)


def test_alignment_of_a_folder_that_is_not_a_checkpoint_is_a_message(tmp_path):
    at = start()
    at.sidebar.radio(key="source").set_value("Checkpoints").run()
    at.sidebar.text_area(key="ck_typed").input(str(tmp_path))
    at.sidebar.button(key="align_go").click().run()
    ok(at)
    assert any("is not a checkpoint folder (no config.json)" in e.value for e in at.error)
    assert at.sidebar.button(key="align_go")  # the page is still there and usable
    at.sidebar.text_area(key="ck_typed").input(str(tmp_path / "missing"))
    at.sidebar.button(key="align_go").click().run()
    ok(at)
    assert any("does not exist" in e.value for e in at.error)


def test_two_checkpoints_side_by_side(tmp_path):
    runs = tmp_path / "runs"
    control_folder(runs / "init")
    control_folder(runs / "moved", scale=0.05)
    at = start()
    at.sidebar.radio(key="source").set_value("Checkpoints").run()
    found = at.sidebar.multiselect(key="ck_pick")
    assert sorted(o.split(" ")[0] for o in found.options) == ["init", "moved"]
    for o in found.options:
        found.select(o)
    paste_probes(at, SMALL)
    at.sidebar.button(key="align_go").click().run()
    ok(at)
    assert not at.error
    scores = at.dataframe[0].value.set_index("run")["alignment_score"]
    assert scores["init"] == pytest.approx(1.0, abs=1e-6) and scores["moved"] < 0.999
    curves = charts(at)[0]
    assert {t["name"] for t in curves["data"]} == {"init", "moved"}
    assert at.get("download_button") and any(d.label == "compare.csv" for d in at.get("download_button"))
    at.selectbox(key="detail_pick").set_value("moved").run()
    ok(at)
    assert float(metrics(at)["alignment score"]) == pytest.approx(scores["moved"], abs=1e-4)


def test_saved_alignment_folder_is_listed_and_shown(tmp_path):
    from probelab.analysis import run_alignment

    res = run_alignment("tiny-llama", base="tiny-llama", probes="analogies", umap=False, progress=False)
    res.write(tmp_path / "runs" / "demo-align")
    at = start()
    at.sidebar.radio(key="source").set_value("Saved alignments").run()
    ok(at)
    assert at.sidebar.multiselect(key="sv_pick").value[0].startswith("demo-align: tiny-llama")
    at.sidebar.button(key="align_go").click().run()
    ok(at)
    assert metrics(at)["alignment score"] == f"{res.score:.4f}"
    at.sidebar.multiselect(key="sv_pick").set_value([])
    at.sidebar.text_input(key="sv_typed").input(str(tmp_path))
    at.sidebar.button(key="align_go").click().run()
    ok(at)
    assert any("not an alignment folder" in e.value for e in at.error)


def test_umap_scatter_colours_and_hover_text(monkeypatch):
    monkeypatch.setenv("PROBELAB_APP_UMAP", "1")
    at = start()
    paste_probes(at, SMALL)
    at.sidebar.button(key="align_go").click().run()
    ok(at)
    umap = charts(at)[1]
    texts = {t for trace in umap["data"] for t in (row[0] for row in trace["customdata"])}
    assert "king is to queen" in texts and {tr["name"] for tr in umap["data"]} == {"pretrained", "expanded"}
    at.radio(key="one-umapc").set_value("category").run()
    ok(at)
    names = {tr["name"] for tr in charts(at)[1]["data"]}
    assert names == {"pasted"}  # one legend entry per category (symbol = side)


def test_umap_fitted_after_the_other_charts_and_stored_whole(monkeypatch):
    """A cold page aligns without the map (drift curves and pairs drawn first), then fits the map into its tab;
    the stored result is the whole one, so a new session reads it back and computes nothing."""
    from probelab.app_support import alignment as al

    monkeypatch.setenv("PROBELAB_APP_UMAP", "1")
    calls, fits = [], []
    real_align, real_with = al.align, al.with_umap
    monkeypatch.setattr(al, "align", lambda *a, **k: calls.append(a[2].umap) or real_align(*a, **k))
    monkeypatch.setattr(al, "with_umap", lambda *a, **k: fits.append(1) or real_with(*a, **k))
    lines = SMALL + "\nsun is to day | moon is to night"  # probes no other test aligns: a cold store
    at = start()
    paste_probes(at, lines)
    at.sidebar.button(key="align_go").click().run()
    ok(at)
    assert calls == [False] and fits == [1]  # the alignment itself ran with the UMAP off
    shown = charts(at)
    assert len(shown) == 3 and shown[1]["layout"]["title"]["text"].startswith("UMAP")
    assert "umap.csv" in {b.proto.label for b in at.get("download_button")}  # downloads of the whole result
    st.cache_data.clear()
    st.cache_resource.clear()
    again = start()
    paste_probes(again, lines)
    again.sidebar.button(key="align_go").click().run()
    ok(again)
    assert calls == [False] and fits == [1]  # read from the store: nothing aligned or fitted again
    assert charts(again)[1]["layout"]["title"]["text"].startswith("UMAP")


# ---- concepts ----------------------------------------------------------------------------------
def test_concepts_page_highlights_tokens_and_shows_a_concept():
    at = start("views/concepts.py")
    ok(at)
    assert at.title[0].value == "Concepts per token"
    html = [h.proto.body for h in at.get("html")]
    assert len(html) >= 3 and all('class="plt"' in h for h in html)
    assert html[0].count('class="plt"') == len("The capital of France is Paris, and the capital of Japan is Tokyo.") + 1
    rows = at.dataframe[0].value
    assert list(rows.columns) == ["#", "token", "next-token loss", "SAE activation", "attribution score"]
    assert rows["token"].iloc[0] == "<|bos|>"
    ranked = at.dataframe(key="cc_pick").value
    first = int(ranked["concept"].iloc[0])
    assert any(m.value.startswith(f"#### concept {first}:") for m in at.markdown)
    assert not at.error


def test_concepts_page_unknown_concept_id_and_empty_text_are_messages():
    at = start("views/concepts.py")
    at.number_input[0].set_value(10_000).run()
    ok(at)
    assert any("unknown concept id 10000: this SAE has 128 concepts" in e.value for e in at.error)
    at.text_area(key="cc_text").input("   ").run()
    ok(at)
    assert any("text is empty" in e.value for e in at.error)


def test_concepts_page_on_a_cocomix_model(tmp_path):
    from probelab.models.cocomix import save_cocomix, tiny_cocomix

    plain = save_cocomix(tiny_cocomix(), tmp_path / "cocomix", tiny_tokenizer())  # 96 concepts, no teacher
    at = start("views/concepts.py")
    at.sidebar.text_input(key="cc_model").input(str(plain)).run()
    ok(at)
    assert any("has 128 latents but this CoCoMix model predicts 96 concepts" in e.value for e in at.error)
    at.sidebar.checkbox(key="cc_labels").uncheck().run()
    ok(at)
    assert any("CoCoMix model: 96 concepts" in s.value for s in at.success)
    rows = at.dataframe[0].value
    assert "predicted logit" in rows.columns and len(rows) == 67
    # its teacher recorded in the config: concepts are labelled with the teacher's SAE labels
    model = tiny_cocomix(n_concepts=128)
    model.cocomix.teacher = {"teacher": "tiny-llama", "sae": "tiny"}
    labelled = save_cocomix(model, tmp_path / "cocomix-labelled", tiny_tokenizer())
    at.sidebar.text_input(key="cc_model").input(str(labelled))
    at.sidebar.checkbox(key="cc_labels").check().run()
    ok(at)
    assert not at.error
    assert any("SAE `tiny` on `tiny-llama`" in c.value for c in at.caption)
    ranked = at.dataframe(key="cc_pick").value
    assert (ranked["label"] != "").all()
    assert any(m.value.startswith(f"#### concept {int(ranked['concept'].iloc[0])}:") for m in at.markdown)


# ---- steering ----------------------------------------------------------------------------------
def test_steering_page_side_by_side_and_bad_concept():
    at = start("views/steering.py")
    ok(at)
    assert not at.code
    at.number_input(key="st_concept").set_value(3)
    at.number_input(key="st_factor").set_value(0.0)
    at.button(key="st_go").click().run()
    ok(at)
    plain, steered = [c.value for c in at.code]
    assert plain == steered and plain.startswith("The weather today is")
    assert any("did not change" in i.value for i in at.info)
    at.number_input(key="st_factor").set_value(200.0).run()
    ok(at)
    assert at.code[0].value == plain and at.code[1].value != plain
    assert not any("did not change" in i.value for i in at.info)
    at.number_input(key="st_concept").set_value(5000).run()
    ok(at)
    assert any("out of range 0..127" in e.value for e in at.error)
