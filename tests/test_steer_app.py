"""The Steering page's label line, missing-SAE message and dose-response sweep (streamlit AppTest, tiny model)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "probelab" / "app" / "main.py")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("steer-app-cache")


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


def steering_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("views/steering.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_sweep_section_label_and_out_of_range():
    at = steering_page()
    assert any(m.value.startswith("**concept 0**: `") for m in at.markdown)  # the label, before any run
    at.number_input(key="st_concept").set_value(3)
    at.number_input(key="st_sw_start").set_value(0.0)
    at.number_input(key="st_sw_stop").set_value(60.0)
    at.number_input(key="st_sw_n").set_value(4)
    at.text_input(key="st_sw_targets").set_value("e|b")
    at.button(key="st_sw_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = at.dataframe[-1].value
    assert list(table["scale"]) == [0.0, 20.0, 40.0, 60.0]
    assert {"activation", "p('e')", "p('b')", "kl", "ppl", "continuation"} <= set(table.columns)
    assert table["kl"].iloc[0] == 0.0 and not table["changed"].iloc[0]
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "concept 3" in fig["layout"]["title"]["text"]
    at.number_input(key="st_concept").set_value(5000).run()
    assert any("out of range 0..127" in e.value for e in at.error)


def test_no_sae_says_what_is_missing():
    at = steering_page()
    at.text_input(key="st_sae").set_value("").run()
    assert not at.exception
    assert any("enter an SAE" in i.value for i in at.info)
    assert not at.button  or all(b.key not in ("st_go", "st_sw_go") for b in at.button)
