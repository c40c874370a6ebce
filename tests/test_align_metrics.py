"""Every alignment metric against a brute-force numpy computation on small random data."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from probelab.analysis import metrics, neighbors, pairs, score, umap_layers

RNG = np.random.default_rng(0)
L, N, D = 3, 9, 5


@pytest.fixture
def sides():
    a = RNG.normal(size=(L, N, D))
    b = a + 0.5 * RNG.normal(size=(L, N, D))
    return a, b


def test_drift_matches_brute_force(sides):
    a, b = sides
    m = metrics.drift(a, b)
    for l in range(L):
        for i in range(N):
            x, y = a[l, i], b[l, i]
            nx, ny = math.sqrt(sum(v * v for v in x)), math.sqrt(sum(v * v for v in y))
            cos = sum(p * q for p, q in zip(x, y)) / (nx * ny)
            eu = math.sqrt(sum((p - q) ** 2 for p, q in zip(x, y)))
            eu_l2 = math.sqrt(sum((p / nx - q / ny) ** 2 for p, q in zip(x, y)))
            assert m["cosine"][l, i] == pytest.approx(cos, abs=1e-12)
            assert m["euclidean"][l, i] == pytest.approx(eu, abs=1e-12)
            assert m["euclidean_l2"][l, i] == pytest.approx(eu_l2, abs=1e-12)
            assert m["euclidean_l2"][l, i] == pytest.approx(math.sqrt(max(0.0, 2 - 2 * cos)), abs=1e-9)
            assert m["relative_euclidean"][l, i] == pytest.approx(eu / ((nx + ny) / 2), abs=1e-12)
            assert m["norm_pretrained"][l, i] == pytest.approx(nx)
            assert m["norm_diff"][l, i] == pytest.approx(ny - nx, abs=1e-12)


def test_identical_sides_have_no_drift(sides):
    a, _ = sides
    m = metrics.drift(a, a.copy())
    assert np.allclose(m["cosine"], 1) and np.allclose(m["euclidean"], 0) and np.allclose(m["norm_diff"], 0)
    with pytest.raises(ValueError, match="different shapes"):
        metrics.drift(a, a[:, :-1])


def test_summarize_is_mean_std_percentiles(sides):
    v = sides[0][..., 0]
    s = metrics.summarize(v, axis=1)
    for l in range(L):
        row = sorted(v[l])
        mean = sum(row) / N
        assert s["mean"][l] == pytest.approx(mean)
        assert s["std"][l] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in row) / N))
        # linear interpolation between order statistics (numpy's default)
        pos = 0.9 * (N - 1)
        lo = int(pos)
        assert s["p90"][l] == pytest.approx(row[lo] + (pos - lo) * (row[lo + 1] - row[lo]))


def _cos(x, y):
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_pair_metrics_match_brute_force(sides):
    a, b = sides
    items = [SimpleNamespace(text=f"s{i}", pair_id=f"p{i // 2}" if i < 8 else None, side=i % 2,
                             category="c" if i < 4 else "d") for i in range(N)]
    items[5] = SimpleNamespace(text="s5", pair_id="lonely", side=1, category="d")  # pair p2 loses side 1
    idx = pairs.pair_index(items)
    assert idx.pair_ids == ["p0", "p1", "p3"] and idx.first.tolist() == [0, 2, 6] and idx.second.tolist() == [1, 3, 7]
    st = pairs.stability(a, b, idx)
    for l in range(L):
        for j, (i0, i1) in enumerate(zip(idx.first, idx.second)):
            pa, pb = _cos(a[l, i0], a[l, i1]), _cos(b[l, i0], b[l, i1])
            assert st["pair_cosine_pretrained"][l, j] == pytest.approx(pa)
            assert st["pair_cosine_expanded"][l, j] == pytest.approx(pb)
            assert st["pair_cosine_change"][l, j] == pytest.approx(pb - pa)
            oa, ob = a[l, i1] - a[l, i0], b[l, i1] - b[l, i0]
            assert st["offset_consistency"][l, j] == pytest.approx(_cos(oa, ob))


def _brute_knn(x, k, dist):
    out = []
    for i in range(len(x)):
        d = [(dist(x[i], x[j]), j) for j in range(len(x)) if j != i]
        out.append([j for _, j in sorted(d)[:k]])
    return out


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_and_retention_match_brute_force(sides, metric):
    a, b = sides
    dist = (lambda x, y: 1 - _cos(x, y)) if metric == "cosine" else (lambda x, y: float(np.linalg.norm(x - y)))
    k = 3
    ret, nn_a, nn_b = neighbors.neighbour_retention(a, b, k, metric)
    for l in range(L):
        ba, bb = _brute_knn(a[l], k, dist), _brute_knn(b[l], k, dist)
        assert nn_a[l].tolist() == ba and nn_b[l].tolist() == bb
        for i in range(N):
            assert ret[l, i] == pytest.approx(len(set(ba[i]) & set(bb[i])) / k)
    same, _, _ = neighbors.neighbour_retention(a, a.copy(), k, metric)
    assert np.all(same == 1)


def test_knn_rejects_bad_k(sides):
    with pytest.raises(ValueError, match="k must be"):
        neighbors.knn(sides[0], N, "cosine")
    with pytest.raises(ValueError, match="unknown neighbour metric"):
        neighbors.knn(sides[0], 2, "manhattan")
    assert neighbors.default_k(4, 5) == 3


def test_score_components_and_geometric_mean(sides):
    a, b = sides
    m = metrics.drift(a, b)
    m["nn_retention"] = neighbors.neighbour_retention(a, b, 3)[0]
    m["pair_cosine_change"] = np.array([[0.1, -0.3], [0.2, 0.0], [0.0, 0.0]])
    parts = score.components(m)
    assert parts["direction"] == pytest.approx(np.mean(np.clip(m["cosine"], 0, 1)))
    assert parts["magnitude"] == pytest.approx(math.exp(-m["relative_euclidean"].mean()))
    assert parts["neighbourhood"] == pytest.approx(m["nn_retention"].mean())
    assert parts["stability"] == pytest.approx(1 - 0.6 / 6)
    prod = parts["direction"] * parts["magnitude"] * parts["neighbourhood"] * parts["stability"]
    assert score.alignment_score(parts) == pytest.approx(prod ** 0.25)
    assert score.alignment_score({**parts, "stability": None}) == pytest.approx(
        (parts["direction"] * parts["magnitude"] * parts["neighbourhood"]) ** (1 / 3))
    perfect = metrics.drift(a, a)
    perfect.update(nn_retention=np.ones((L, N)), pair_cosine_change=np.zeros((L, 2)))
    assert score.alignment_score(score.components(perfect)) == pytest.approx(1.0)
    assert score.stability(np.zeros((L, 0))) is None


def _brute_silhouette(x, labels):
    d = lambda p, q: 1 - _cos(p, q)  # noqa: E731
    s = []
    for i in range(len(x)):
        own = [d(x[i], x[j]) for j in range(len(x)) if labels[j] == labels[i] and j != i]
        a_i = sum(own) / len(own)
        b_i = min(np.mean([d(x[i], x[j]) for j in range(len(x)) if labels[j] == c])
                  for c in set(labels) if c != labels[i])
        s.append((b_i - a_i) / max(a_i, b_i))
    return float(np.mean(s))


def test_layer_silhouette_matches_brute_force(sides):
    a, b = sides
    pts = umap_layers.stack_points(a, b, [2, 5, 9], normalize=True)
    assert pts.x.shape == (2 * L * N, D) and pts.layer.tolist()[:N + 1] == [2] * N + [5]
    sil = umap_layers.silhouettes(pts, None)
    m = pts.side == 0
    assert sil["silhouette_pretrained"] == pytest.approx(_brute_silhouette(pts.x[m], pts.layer[m].tolist()))
    assert umap_layers.layer_silhouette(pts.x[:N], pts.layer[:N]) is None  # one layer: undefined


def test_umap_is_deterministic_for_a_seed():
    x = np.concatenate([RNG.normal(loc=c, size=(20, 6)) for c in (0.0, 3.0, 6.0)])
    e1 = umap_layers.embed(x, metric="cosine", seed=7, n_neighbors=10)
    e2 = umap_layers.embed(x, metric="cosine", seed=7, n_neighbors=10)
    e3 = umap_layers.embed(x, metric="cosine", seed=8, n_neighbors=10)
    assert e1.shape == (60, 2) and np.array_equal(e1, e2)
    assert not np.allclose(e1, e3)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_knn_graph_for_umap_matches_brute_force(metric):
    x = RNG.normal(size=(40, 6))
    idx, dist = umap_layers.exact_knn(x, 4, metric, chunk=7)  # several chunks
    d = (lambda p, q: 1 - _cos(p, q)) if metric == "cosine" else (lambda p, q: float(np.linalg.norm(p - q)))
    brute = _brute_knn(x, 3, d)
    assert idx[:, 0].tolist() == list(range(40)) and np.all(dist[:, 0] == 0)  # self first
    assert idx[:, 1:].tolist() == brute
    for i in range(40):
        assert dist[i, 1:] == pytest.approx([d(x[i], x[j]) for j in brute[i]], abs=1e-5)
    assert umap_layers.exact_knn(x, 4, "manhattan") is None


def test_drift_figure_draws_flat_panels_flat():
    from probelab.analysis.report import MIN_Y_SPAN, drift_figure, y_range

    # identical sides: cosine 1 with float noise; Euclidean distance grows with depth
    rows = [{"layer": i, "cosine": 1.0 - i * 1e-17, "cosine_std": 1e-16, "cosine_mean_token": 1.0,
             "euclidean": float(i), "euclidean_std": 0.1} for i in range(1, 6)]
    fig = drift_figure(rows, with_weight=False)
    lo, hi = fig.layout.yaxis.range  # panel 1: cosine
    assert hi - lo == pytest.approx(MIN_Y_SPAN) and lo < 1.0 < hi
    assert fig.layout.yaxis2.range is None  # panel 2 spans 0.9..5.1: plotly's autorange
    assert y_range([5.0, None, 5.0], [None, None, 0.0]) == pytest.approx([5.0 - 2.5e-3, 5.0 + 2.5e-3])
    assert y_range([None], [None]) is None
    assert y_range([float("nan"), 1.0], [None, None]) == pytest.approx([1.0 - 5e-4, 1.0 + 5e-4])  # NaN skipped
