"""The Features page under streamlit.testing (AppTest), on the tiny random model and SAE."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "probelab" / "app" / "main.py")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("features-cache")


@pytest.fixture(autouse=True)
def tiny_app(tmp_path, monkeypatch, shared_cache):
    monkeypatch.setenv("PROBELAB_CACHE", str(shared_cache))
    monkeypatch.setenv("PROBELAB_APP_MODEL", "tiny-llama")
    monkeypatch.setenv("PROBELAB_APP_UMAP", "0")
    monkeypatch.chdir(tmp_path)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def start(page: str = "views/features.py", **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(page)  # straight to the page (the default page would compute an alignment first)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_features_page_lists_latents_and_shows_a_dashboard():
    at = start()
    assert at.title[0].value == "SAE features"
    table = at.dataframe[0].value
    assert len(table) > 0 and set(table.columns) >= {"latent", "label", "density %", "dense"}
    assert (table["label"] != "(dead)").all()  # dead latents hidden by default
    first = int(table["latent"].iloc[0])
    assert at.subheader[0].value.startswith(f"latent {first}:")
    assert {m.label for m in at.metric} == {"density", "firings", "fires most on"}
    assert len(at.get("plotly_chart")) == 1
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["data"][0]["type"] == "bar"
    assert at.get("download_button")[0].label.startswith("latent dashboard")
    # search narrows the table to matching latents
    word = table["label"].iloc[0].split("|")[0]
    at.text_input(key="ft_search").input(word).run()
    hits = at.dataframe[0].value
    assert 0 < len(hits) <= len(table)
    assert all(word.lower() in (r["label"] + r["top tokens"] + r["promoted"]).lower() for _, r in hits.iterrows())


def test_features_page_density_filter_and_dead_latents():
    at = start()
    at.sidebar.select_slider(key="ft_density").set_value((0.0, 0.1)).run()
    table = at.dataframe[0].value
    assert (table["density %"] <= 10.0).all() and not table["dense"].any()
    at.sidebar.checkbox(key="ft_hide_dead").uncheck().run()
    assert (at.dataframe[0].value["label"] == "(dead)").any()


def test_features_page_opens_the_latent_in_the_address():
    at = start(latent="7")
    assert not at.error
    assert at.subheader[0].value.startswith("latent 7:")
    at = start(latent="9999")
    assert any("unknown latent 9999" in e.value for e in at.error)


def test_concepts_page_links_to_the_features_page():
    at = start("views/concepts.py")
    links = at.get("page_link")
    assert links, "no link to the Features page"
    proto = links[0].proto
    assert "features" in proto.page and "latent=" in proto.query_string
