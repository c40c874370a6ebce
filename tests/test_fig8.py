"""The Figure 8 grid: rows x columns panels, one shared map per layer, states saved by align, offline HTML."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from probelab.analysis.compare import figure8, read_alignment
from probelab.analysis.report import grid_figure
from probelab.analysis.umap_layers import load_states, pick_layers, save_states, shared_layer_maps
from probelab.errors import ProbelabError
from probelab.models.control import ExpansionConfig, expand_model, save_control
from probelab.models.tiny import tiny_llama, tiny_tokenizer

PAIRS = [("gender", "king is to queen", "man is to woman"), ("capital", "Paris is to France", "Tokyo is to Japan"),
         ("tense", "see is to saw", "go is to went"), ("animal", "dog is to puppy", "cat is to kitten"),
         ("plural", "mouse is to mice", "goose is to geese"), ("comparative", "good is to better", "cold is to colder")]


def pca2(x: np.ndarray) -> np.ndarray:
    """A deterministic stand-in for UMAP in unit tests (a pure function of the rows it is given)."""
    c = x - x.mean(0)
    return c @ np.linalg.svd(c, full_matrices=False)[2][:2].T


def fake_runs(rng, N=6, d=8, layers=(2, 4)):
    L = len(layers)
    base = rng.normal(size=(L, N, d))
    return [
        {"name": "at init", "layers": list(layers), "pretrained": base, "expanded": base.copy()},
        {"name": "lerp+mse", "layers": list(layers), "pretrained": base, "expanded": base + 0.1 * rng.normal(size=base.shape)},
        {"name": "full FT", "layers": list(layers), "pretrained": base, "expanded": rng.normal(size=base.shape)},
    ]


def test_shared_map_identical_states_land_on_identical_points():
    rng = np.random.default_rng(0)
    runs = fake_runs(rng)
    grid = shared_layer_maps(runs, [2, 4], embed_fn=pca2)
    assert len(grid) == 3 * 2 * 2 * 6  # runs x layers x sides x probes
    for layer in (2, 4):
        g = grid[grid["layer"] == layer]
        a = {r: g[(g["run"] == r) & (g["side"] == "pretrained")].sort_values("probe")[["x", "y"]].to_numpy()
             for r in ("at init", "lerp+mse", "full FT")}
        b = {r: g[(g["run"] == r) & (g["side"] == "expanded")].sort_values("probe")[["x", "y"]].to_numpy()
             for r in a}
        # the base states are shared by every row: one fit puts them on the same coordinates in each row
        assert np.array_equal(a["at init"], a["lerp+mse"]) and np.array_equal(a["at init"], a["full FT"])
        assert np.array_equal(a["at init"], b["at init"])  # identical branches at init coincide
        assert not np.allclose(b["lerp+mse"], b["full FT"])
        # distances on the map follow the data: the small perturbation stays closer than the unrelated side
        assert np.linalg.norm(b["lerp+mse"] - a["lerp+mse"]) < np.linalg.norm(b["full FT"] - a["full FT"])


def test_shared_map_is_one_fit_per_layer_not_per_row():
    rng = np.random.default_rng(1)
    runs = fake_runs(rng)
    calls = []

    def spy(x):
        calls.append(len(x))
        return pca2(x)

    shared_layer_maps(runs, [2, 4], embed_fn=spy)
    # 2 fits (one per layer), each on the distinct states of all rows: 6 base + 6 + 6 expanded
    assert calls == [18, 18]
    alone = shared_layer_maps(runs[2:], [2], embed_fn=pca2)
    together = shared_layer_maps(runs, [2], embed_fn=pca2)
    ft = lambda g: g[(g["run"] == "full FT")].sort_values(["side", "probe"])[["x", "y"]].to_numpy()  # noqa: E731
    assert not np.allclose(ft(alone), ft(together))  # rows share a fit: adding a row moves the map


def test_grid_errors_and_layer_choice():
    rng = np.random.default_rng(2)
    runs = fake_runs(rng)
    with pytest.raises(ProbelabError, match="layer 3 is not among"):
        shared_layer_maps(runs, [3], embed_fn=pca2)
    with pytest.raises(ProbelabError, match="at most 4"):
        shared_layer_maps(runs * 2, [2], embed_fn=pca2)
    assert pick_layers([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == [1, 4, 7, 10]
    assert pick_layers([2, 4]) == [2, 4]


def test_grid_figure_has_rows_times_columns_panels_with_shared_axes_per_column():
    rng = np.random.default_rng(3)
    runs = fake_runs(rng)
    grid = shared_layer_maps(runs, [2, 4], embed_fn=pca2)
    probes = pd.DataFrame({"probe": range(6), "text": [f"s{i}" for i in range(6)],
                           "category": ["a", "a", "b", "b", "c", "c"], "pair_id": [0, 0, 1, 1, 2, 2]})
    fig = grid_figure(grid, probes)
    lay = fig.to_plotly_json()["layout"]
    xaxes = sorted(k for k in lay if re.fullmatch(r"xaxis\d*", k))
    assert len(xaxes) == 3 * 2
    titles = [a["text"] for a in lay["annotations"]]
    assert titles[:2] == ["layer 2", "layer 4"] and {"at init", "lerp+mse", "full FT"} <= set(titles)
    assert lay["xaxis3"]["matches"] == "x" and lay["yaxis4"]["matches"] == "y2"  # a column is one coordinate system
    legend = [t for t in fig.data if t.showlegend]
    assert len({t.name for t in legend}) == len(legend) == 3  # each category listed once (symbols: legend title)
    colours = {t.name.split(" (")[0]: t.marker.color for t in fig.data if t.mode == "markers"}
    assert len(set(colours.values())) == 3  # one colour per category, the same in every panel


def test_states_roundtrip(tmp_path):
    a = np.random.default_rng(4).normal(size=(2, 5, 3)).astype(np.float32)
    save_states(tmp_path / "s.safetensors", {"pretrained": a, "expanded": a + 1}, [2, 4])
    back = load_states(tmp_path / "s.safetensors")
    assert back["layers"] == [2, 4] and np.array_equal(back["pretrained"], a)
    assert load_states(tmp_path / "missing.safetensors") is None


# ---- end to end on tiny checkpoints ------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from probelab.analysis import run_alignment

    tmp = tmp_path_factory.mktemp("fig8")
    probe_file = tmp / "small.jsonl"
    probe_file.write_text("\n".join(json.dumps({"id": f"p{i}", "category": c, "sentences": [s0, s1]})
                                    for i, (c, s0, s1) in enumerate(PAIRS)))
    at_init = save_control(expand_model(tiny_llama(), ExpansionConfig(num_expanded=2)), tmp / "init", tiny_tokenizer())
    trained = expand_model(tiny_llama(), ExpansionConfig(num_expanded=2))
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in trained.control_layers:
            for p in layer.expanded.parameters():
                p.add_(0.02 * torch.randn_like(p))
    trained = save_control(trained, tmp / "trained", tiny_tokenizer())
    out = []
    for name, ck in (("a_init", at_init), ("b_trained", trained)):
        run_alignment(ck, probes=probe_file, out=tmp / name, umap=False, progress=False)
        out.append(tmp / name)
    return out


def test_align_saves_states_and_compare_draws_the_grid(folders, tmp_path):
    from probelab.analysis import compare

    m = read_alignment(folders[0])
    assert m["_states"]["layers"] == [2, 4] and m["_states"]["pretrained"].shape == (2, 12, 64)
    assert np.array_equal(m["_states"]["pretrained"], m["_states"]["expanded"])  # at init
    runs = [read_alignment(f) for f in folders]
    grid, probes = figure8(runs, [4, 2])
    assert sorted(grid["layer"].unique()) == [2, 4] and len(grid) == 2 * 2 * 2 * 12
    g = grid[(grid["run"] == "a_init") & (grid["layer"] == 4)]
    assert np.array_equal(g[g["side"] == "pretrained"][["x", "y"]].to_numpy(),
                          g[g["side"] == "expanded"][["x", "y"]].to_numpy())
    # the first merged layer's pretrained branch sees the same input in both checkpoints: same points
    f = grid[(grid["layer"] == 2) & (grid["side"] == "pretrained")]
    assert np.array_equal(f[f["run"] == "a_init"][["x", "y"]].to_numpy(), f[f["run"] == "b_trained"][["x", "y"]].to_numpy())
    assert set(probes["category"]) == {c for c, _, _ in PAIRS}
    with pytest.raises(ProbelabError, match="not compared in every alignment"):
        figure8(runs, [3])
    out, _ = compare(folders, tmp_path / "cmp", layers=[2, 4])
    html = (out / "compare.html").read_text()
    assert 'id="fig-grid"' in html and "ONE UMAP fit" in html
    assert not re.search(r"<script[^>]+src=", html)


def test_app_support_grid_from_loaded_results(folders):
    from probelab.app_support import alignment as al

    named = {f.name: al.load_alignment(f) for f in folders}
    assert all(r.states is not None and set(r.states) == {"pretrained", "expanded"} for r in named.values())
    assert al.common_layers(named) == [2, 4]
    fig = al.figure8_figure(named, [2, 4], embed_fn=pca2)
    lay = fig.to_plotly_json()["layout"]
    assert len([k for k in lay if re.fullmatch(r"xaxis\d*", k)]) == 2 * 2
    again = al.figure8_figure(named, [2, 4], embed_fn=pca2)
    assert all(np.array_equal(a.x, b.x) for a, b in zip(again.data, fig.data) if a.mode == "markers")
