"""The Lens page under streamlit.testing (AppTest), on tiny random models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from probelab.models.control import ExpansionConfig, expand_model, save_control
from probelab.models.tiny import tiny_llama, tiny_tokenizer

APP = str(Path(__file__).resolve().parents[1] / "probelab" / "app" / "main.py")


@pytest.fixture(autouse=True)
def tiny_app(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PROBELAB_APP_MODEL", "tiny-llama")
    monkeypatch.setenv("PROBELAB_APP_UMAP", "0")
    monkeypatch.chdir(tmp_path)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("views/lens.py")  # straight to the page (the default page would compute an alignment first)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_lens_page_heatmap_and_table_on_a_plain_model():
    at = start()
    assert at.title[0].value == "Logit lens"
    (spec,) = charts(at)
    hm = spec["data"][0]
    assert hm["type"] == "heatmap" and hm["y"] == ["0", "1", "2", "3", "4"]
    assert len(hm["x"]) == len(tiny_tokenizer()("The capital of France is")["input_ids"])
    # default target = the model's own prediction: on the last layer it is the top token, KL to final 0
    table = at.dataframe[0].value
    last = table[table["layer"] == 4].iloc[0]
    assert last["rank"] == 1 and last["KL to final"] == 0.0
    assert at.selectbox(key="ln_stream").options == ["resid: residual stream (every layer)"]
    at.sidebar.radio(key="ln_metric").set_value("kl").run()
    assert not at.exception
    z = charts(at)[0]["data"][0]["z"]
    assert z[-1] == pytest.approx([0.0] * len(z[-1]), abs=1e-6)


def test_lens_page_checkpoint_and_base_side_by_side(tmp_path):
    folder = save_control(expand_model(tiny_llama(), ExpansionConfig(num_expanded=2)).eval(), tmp_path / "ck",
                          tiny_tokenizer())
    at = start()
    at.sidebar.text_input(key="ln_model").input(str(folder))
    at.sidebar.text_input(key="ln_base").input("tiny-llama").run()
    assert not at.exception and not at.error
    assert len(charts(at)) == 2
    opts = at.selectbox(key="ln_stream").options
    assert [o.split(":")[0] for o in opts] == ["resid", "pretrained", "expanded", "merged"]
    at.selectbox(key="ln_stream").set_value("expanded").run()
    ck, base = charts(at)
    assert ck["data"][0]["y"] == ["2", "4"]          # merged layers only
    assert base["data"][0]["y"] == ["0", "1", "2", "3", "4"]  # the base has no branches: resid shown
    assert any("has no 'expanded' stream" in i.value for i in at.info)
    # at init the expanded branch reads exactly like the base's resid at the same layers
    assert ck["data"][0]["z"] == [base["data"][0]["z"][2], base["data"][0]["z"][4]]


def test_lens_page_bad_target_and_bad_model_are_messages():
    at = start()
    at.sidebar.text_input(key="ln_target").input("abc").run()
    assert not at.exception
    assert any("is 3 tokens" in e.value for e in at.error)
    at.sidebar.text_input(key="ln_target").input("").run()
    at.sidebar.text_input(key="ln_model").input("/no/such/folder").run()
    assert any("does not exist" in e.value for e in at.error)
