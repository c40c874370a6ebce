"""Drift between two sides' hidden states, per layer and per probe.

The two *sides* are arrays ``a`` (the reference: the pretrained branch, or the base model) and
``b`` (the expanded branch, or the fine-tuned model) of shape ``[n_layers, n_probes, d]``, the
state of each probe sentence at each layer. Every function here is plain numpy, computed in
float64, and returns ``[n_layers, n_probes]`` arrays (one number per layer and probe) that
:func:`summarize` reduces to a mean and a spread per layer.

>>> import numpy as np
>>> a = np.ones((2, 3, 4)); b = 2 * a
>>> cosine(a, b).round(6).tolist()
[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
>>> float(euclidean(a, b)[0, 0]), float(euclidean(l2_normalize(a), l2_normalize(b))[0, 0])
(2.0, 0.0)
"""
from __future__ import annotations

import numpy as np

EPS = 1e-12


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Each state divided by its L2 norm (a zero vector stays zero)."""
    x = _f64(x)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching states (the same in raw and L2-normalised space)."""
    return (l2_normalize(a) * l2_normalize(b)).sum(-1)


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of matching states."""
    return np.linalg.norm(_f64(a) - _f64(b), axis=-1)


def norms(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(_f64(x), axis=-1)


def norm_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|b| - |a|``: positive when the second side's states are longer."""
    return norms(b) - norms(a)


def relative_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance divided by the mean norm of the two states (scale-free, in [0, 2])."""
    return euclidean(a, b) / np.maximum(0.5 * (norms(a) + norms(b)), EPS)


def drift(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """All per-(layer, probe) drift numbers between the two sides, by name.

    ``cosine``; ``euclidean`` (raw states); ``euclidean_l2`` (both sides L2-normalised first,
    i.e. ``sqrt(2 - 2 cos)``); ``relative_euclidean``; ``norm_pretrained`` / ``norm_expanded`` and
    their difference ``norm_diff``.
    """
    a, b = _f64(a), _f64(b)
    if a.shape != b.shape:
        raise ValueError(f"the two sides have different shapes {a.shape} and {b.shape}")
    return {
        "cosine": cosine(a, b),
        "euclidean": euclidean(a, b),
        "euclidean_l2": euclidean(l2_normalize(a), l2_normalize(b)),
        "relative_euclidean": relative_euclidean(a, b),
        "norm_pretrained": norms(a),
        "norm_expanded": norms(b),
        "norm_diff": norm_difference(a, b),
    }


SPREAD = ("mean", "std", "p10", "p90")


def summarize(values: np.ndarray, axis: int = -1) -> dict[str, np.ndarray]:
    """Mean and spread (population std, 10th and 90th percentile) along ``axis`` (the probes)."""
    v = _f64(values)
    return {
        "mean": v.mean(axis=axis),
        "std": v.std(axis=axis),
        "p10": np.percentile(v, 10, axis=axis),
        "p90": np.percentile(v, 90, axis=axis),
    }
