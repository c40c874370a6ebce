"""Layer-wise clustering: a UMAP map of all probe states over layers and both sides, and silhouettes.

The paper's Figure 8 shows, in TensorBoard's projector, that probe states cluster by layer and
that the clusters of the pretrained and expanded branches coincide when the expanded branch keeps
its alignment. Here the map is computed with umap-learn (fixed ``random_state``, so a map is
reproducible) and the clustering is scored with the silhouette of the *layer labels* on each side
(1: layers form tight separate clusters; 0: overlapping; negative: mixed up).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .metrics import l2_normalize


@dataclass
class LayerPoints:
    """All states flattened to one point each, with their labels."""
    x: np.ndarray          # [2 * n_layers * n_probes, d]
    side: np.ndarray       # 0 / 1
    layer: np.ndarray      # layer index (the model's numbering)
    probe: np.ndarray      # probe position in the probe set


def stack_points(a: np.ndarray, b: np.ndarray, layers: list[int], normalize: bool = True) -> LayerPoints:
    """Flatten ``a`` and ``b`` (``[n_layers, n_probes, d]``) in the order side, layer, probe."""
    L, N, d = a.shape
    both = np.stack([a, b]).astype(np.float64)  # [2, L, N, d]
    if normalize:
        both = l2_normalize(both)
    s, l, p = np.meshgrid(np.arange(2), np.asarray(layers), np.arange(N), indexing="ij")
    return LayerPoints(both.reshape(-1, d), s.ravel(), l.ravel(), p.ravel())


def reduce(x: np.ndarray, dims: int, seed: int = 0) -> np.ndarray:
    """Truncated SVD to ``dims`` components (no centring, so inner products and cosines are kept as well
    as a rank-``dims`` map can); the identity when ``x`` is already that small."""
    if not dims or x.shape[1] <= dims or x.shape[0] <= dims:
        return x
    from sklearn.decomposition import TruncatedSVD

    return TruncatedSVD(n_components=dims, random_state=seed).fit_transform(x)


def exact_knn(x: np.ndarray, k: int, metric: str, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact ``k`` nearest neighbours (self included first, distance 0) for ``cosine`` / ``euclidean``,
    in row chunks; ``None`` for other metrics (UMAP then searches itself).

    Handing UMAP this graph skips its own neighbour search and that search's numba compilation,
    which is most of UMAP's time on a few thousand points (16 s -> 6 s for 1,440 states here).
    """
    if metric not in ("cosine", "euclidean"):
        return None
    x = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sq = (x * x).sum(1)
    n = len(x)
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        if metric == "cosine":
            d = 1.0 - x[rows] @ x.T
        else:
            d = np.sqrt(np.maximum(sq[rows, None] + sq[None, :] - 2 * x[rows] @ x.T, 0.0))
        r = np.arange(rows.start, rows.stop)
        d[r - start, r] = -np.inf  # self first
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, part, 1), axis=1, kind="stable")
        idx[rows] = np.take_along_axis(part, order, 1)
        dist[rows] = np.maximum(np.take_along_axis(d, idx[rows], 1), 0.0)
    return idx, dist


def embed(x: np.ndarray, metric: str = "cosine", seed: int = 0, n_neighbors: int = 15,
          min_dist: float = 0.1, reduce_dims: int = 50, n_epochs: int | None = 200) -> np.ndarray:
    """2-D UMAP coordinates of the rows of ``x`` (deterministic for a fixed ``seed``).

    ``x`` is first reduced to ``reduce_dims`` dimensions by a truncated SVD (0 turns it off): the
    usual preprocessing for UMAP on wide data, 5-10x faster on 7,200 states of width 576 here.
    ``n_epochs`` (UMAP's own default is 500 for small data) trades layout polish for time.
    """
    import umap  # slow import (numba); only when a map is actually computed

    n = x.shape[0]
    if n < 4:
        raise ValueError(f"UMAP needs at least 4 points, got {n}")
    x = reduce(np.asarray(x, dtype=np.float64), reduce_dims, seed)
    k = max(2, min(n_neighbors, n - 1))
    knn = exact_knn(x, k, metric)
    reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=min_dist, metric=metric, random_state=seed,
                        transform_seed=seed, n_epochs=n_epochs,
                        precomputed_knn=(knn[0], knn[1], None) if knn is not None else (None, None, None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", spectral-init fallbacks
        return np.asarray(reducer.fit_transform(x.astype(np.float32)), dtype=np.float64)


def layer_silhouette(x: np.ndarray, layer_labels: np.ndarray, metric: str = "cosine") -> float | None:
    """Silhouette of the layer labels (``None`` when fewer than 2 layers or too few points)."""
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(layer_labels))
    if n_labels < 2 or n_labels >= len(layer_labels):
        return None
    return float(silhouette_score(x, layer_labels, metric=metric))


def silhouettes(points: LayerPoints, coords: np.ndarray | None, metric: str = "cosine") -> dict[str, float | None]:
    """Layer-label silhouette per side, in the state space and (if given) on the UMAP map."""
    out: dict[str, float | None] = {}
    for s, name in enumerate(("pretrained", "expanded")):
        m = points.side == s
        out[f"silhouette_{name}"] = layer_silhouette(points.x[m], points.layer[m], metric)
        if coords is not None:
            out[f"silhouette_umap_{name}"] = layer_silhouette(coords[m], points.layer[m], "euclidean")
    return out
