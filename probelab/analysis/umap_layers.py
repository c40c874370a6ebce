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


# ---- Figure 8: one map per layer, shared by several models --------------------------------------
STATES_FILE = "states.safetensors"  # last-token states of both sides, in an alignment folder
GRID_MAX_ROWS = 4


def save_states(path, states: dict, layers: list[int]) -> None:
    """Write ``{"pretrained": [L, N, d], "expanded": [L, N, d]}`` (float32) and their layer numbers."""
    import json

    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in states.items()}, str(path),
              metadata={"layers": json.dumps([int(x) for x in layers])})


def load_states(path) -> dict | None:
    """What :func:`save_states` wrote (``None`` when the file is missing), with ``"layers"`` added."""
    import json
    from pathlib import Path

    from safetensors import safe_open

    if not Path(path).is_file():
        return None
    from ..errors import ProbelabError

    try:
        with safe_open(str(path), framework="numpy") as f:
            out = {k: f.get_tensor(k) for k in f.keys()}
            out["layers"] = json.loads((f.metadata() or {}).get("layers", "[]"))
    except Exception as e:  # safetensors raises its own error types on a truncated or corrupt file
        raise ProbelabError(f"{path} is not a readable states file ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); re-run probelab align") from None
    return out


def pick_layers(layers: list[int], n: int = 4) -> list[int]:
    """Up to ``n`` layers spread evenly over ``layers`` (first and last included).

    >>> pick_layers([3, 7, 11, 15, 19, 23, 27, 29], 4)
    [3, 11, 23, 29]
    """
    layers = sorted(int(x) for x in layers)
    if len(layers) <= n:
        return layers
    idx = np.unique(np.round(np.linspace(0, len(layers) - 1, n)).astype(int))
    return [layers[i] for i in idx]


def _flat_map(x: np.ndarray) -> np.ndarray:
    """Coordinates for fewer than 4 distinct states (too few for UMAP): the first two principal axes."""
    c = x - x.mean(0, keepdims=True)
    if len(x) < 2 or not np.any(c):
        return np.zeros((len(x), 2))
    u, s, _ = np.linalg.svd(c, full_matrices=False)
    out = np.zeros((len(x), 2))
    k = min(2, u.shape[1])
    out[:, :k] = u[:, :k] * s[:k]
    return out


def shared_layer_maps(runs: list[dict], layers: list[int], normalize: bool = True, embed_fn=None) -> "pd.DataFrame":
    """One 2-D map per layer, fitted once on the states of *every* run at that layer, so that the
    panels of a column are in one coordinate system (the paper's Figure 8 grid).

    ``runs``: ``[{"name", "layers", "pretrained": [L, N, d], "expanded": [L, N, d]}]`` over the same
    ``N`` probe sentences. Identical states (a base model shared by the rows, the two branches of an
    expansion at init) are fitted once, so they land on identical coordinates. ``embed_fn(x)`` maps the
    distinct states to 2-D (default: :func:`embed` with its defaults). Returns one row per
    (run, layer, side, probe): ``run, row, layer, side, probe, x, y``.
    """
    import pandas as pd

    from ..errors import ProbelabError

    if not runs:
        raise ProbelabError("the grid needs at least one alignment")
    if len(runs) > GRID_MAX_ROWS:
        raise ProbelabError(f"the grid shows at most {GRID_MAX_ROWS} models (rows), got {len(runs)}")
    n = {np.asarray(r["pretrained"]).shape[1] for r in runs} | {np.asarray(r["expanded"]).shape[1] for r in runs}
    if len(n) != 1:
        raise ProbelabError("the alignments were run on different numbers of probe sentences; use one probe set")
    N = n.pop()
    embed_fn = embed_fn or embed
    frames = []
    for layer in layers:
        blocks = []
        for r in runs:
            if int(layer) not in [int(x) for x in r["layers"]]:
                raise ProbelabError(f"layer {layer} is not among the compared layers of {r['name']} "
                                    f"({', '.join(map(str, r['layers']))})")
            li = [int(x) for x in r["layers"]].index(int(layer))
            blocks += [np.asarray(r["pretrained"][li]), np.asarray(r["expanded"][li])]
        x = np.concatenate(blocks).astype(np.float64)
        if normalize:
            x = l2_normalize(x)
        uniq, inverse = np.unique(x, axis=0, return_inverse=True)
        coords = (embed_fn(uniq) if len(uniq) >= 4 else _flat_map(uniq))[np.asarray(inverse).ravel()]
        R = len(runs)
        row, side, probe = np.meshgrid(np.arange(R), np.arange(2), np.arange(N), indexing="ij")
        frames.append(pd.DataFrame({
            "run": np.array([r["name"] for r in runs], dtype=object)[row.ravel()], "row": row.ravel(),
            "layer": int(layer), "side": np.where(side.ravel() == 0, "pretrained", "expanded"),
            "probe": probe.ravel(), "x": coords[:, 0], "y": coords[:, 1]}))
    return pd.concat(frames, ignore_index=True)
