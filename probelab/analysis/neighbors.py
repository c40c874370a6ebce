"""Nearest neighbours among the probes, and how many survive from one side to the other.

At each layer every probe's ``k`` nearest other probes are found among the first side's states
and among the second side's states (cosine or Euclidean). ``retention@k`` is the fraction of the
first side's neighbours that are still neighbours on the second side: 1 when the geometry of the
probe set is unchanged, about ``k / (n - 1)`` for unrelated geometries.

>>> import numpy as np
>>> x = np.array([[[0.0], [1.0], [3.0], [7.0]]])   # one layer, 4 probes on a line
>>> knn(x, 1, "euclidean")[0, :, 0].tolist()
[1, 0, 1, 2]
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .metrics import l2_normalize


def cosine_distances(x: np.ndarray) -> np.ndarray:
    """``1 - cos`` between all probes of each layer: ``[n_layers, n, n]``."""
    u = l2_normalize(x)
    return 1.0 - np.einsum("lid,ljd->lij", u, u)


def euclidean_distances(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sq = (x * x).sum(-1)
    d2 = sq[:, :, None] + sq[:, None, :] - 2 * np.einsum("lid,ljd->lij", x, x)
    return np.sqrt(np.maximum(d2, 0.0))


DISTANCES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "cosine": cosine_distances,
    "euclidean": euclidean_distances,
}


def knn(x: np.ndarray, k: int, metric: str = "cosine") -> np.ndarray:
    """Indices of the ``k`` nearest other probes, nearest first: ``[n_layers, n, k]``.

    Ties are broken by probe index (stable sort), so identical inputs give identical neighbours.
    """
    if metric not in DISTANCES:
        raise ValueError(f"unknown neighbour metric {metric!r}; choose one of {', '.join(DISTANCES)}")
    n = x.shape[1]
    if not 1 <= k < n:
        raise ValueError(f"k must be between 1 and n_probes - 1 = {n - 1}, got {k}")
    d = DISTANCES[metric](x)
    d[:, np.arange(n), np.arange(n)] = np.inf  # a probe is not its own neighbour
    return np.argsort(d, axis=-1, kind="stable")[..., :k]


def retention(nn_a: np.ndarray, nn_b: np.ndarray) -> np.ndarray:
    """Fraction of each probe's side-a neighbours found among its side-b neighbours: ``[n_layers, n]``."""
    k = nn_a.shape[-1]
    hits = (nn_a[..., :, None] == nn_b[..., None, :]).any(-1).sum(-1)
    return hits / k


def neighbour_retention(a: np.ndarray, b: np.ndarray, k: int, metric: str = "cosine"):
    """``(retention [n_layers, n], nn_a, nn_b)`` for one metric."""
    nn_a, nn_b = knn(a, k, metric), knn(b, k, metric)
    return retention(nn_a, nn_b), nn_a, nn_b


def default_k(n_probes: int, k: int = 5) -> int:
    """``k`` clipped to what ``n_probes`` allows."""
    return max(1, min(k, n_probes - 1))
