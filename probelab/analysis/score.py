"""One alignment score per checkpoint, from four components that each stand alone.

Every component is 1 for perfectly aligned sides (the Control LLM at initialisation, or a model
compared with itself) and falls towards 0 as one kind of drift grows:

- ``direction``     mean cosine of matching states, clipped at 0 (Figure 8's branch cosine);
- ``magnitude``     ``exp(-mean relative Euclidean distance)``: catches drift that keeps direction
  but changes length or adds a small orthogonal part (the paper's cosine-divergence case);
- ``neighbourhood`` mean neighbour retention@k: is the probe set's local geometry kept?
- ``stability``     ``1 - mean |pair cosine change|``: are analogy pairs as similar as before
  (semantic stability, the paper's main qualitative reading of Figure 8)?

The score is their geometric mean, so drift in any single respect cannot be hidden by the others
(a mean would let three perfect components carry a collapsed fourth). Components that cannot be
computed (no complete pair in the probe set) are left out of the mean and reported as ``None``.

>>> alignment_score({"direction": 1.0, "magnitude": 1.0, "neighbourhood": 1.0, "stability": 1.0})
1.0
>>> round(alignment_score({"direction": 0.9, "magnitude": 0.4, "neighbourhood": 1.0, "stability": None}), 4)
0.7114
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np


def direction(cos: np.ndarray) -> float:
    return float(np.clip(np.asarray(cos, dtype=np.float64), 0.0, 1.0).mean())


def magnitude(rel_euclidean: np.ndarray) -> float:
    return float(np.exp(-np.asarray(rel_euclidean, dtype=np.float64).mean()))


def neighbourhood(retention: np.ndarray) -> float:
    return float(np.asarray(retention, dtype=np.float64).mean())


def stability(pair_cosine_change: np.ndarray) -> float | None:
    v = np.asarray(pair_cosine_change, dtype=np.float64)
    if v.size == 0:
        return None
    return float(max(0.0, 1.0 - np.abs(v).mean()))


# component name -> (input metric name, function); the inputs are [n_layers, n] arrays
COMPONENTS: dict[str, tuple[str, Callable]] = {
    "direction": ("cosine", direction),
    "magnitude": ("relative_euclidean", magnitude),
    "neighbourhood": ("nn_retention", neighbourhood),
    "stability": ("pair_cosine_change", stability),
}


def components(metrics: dict[str, np.ndarray]) -> dict[str, float | None]:
    """Every component from a dict of per-(layer, probe or pair) metric arrays."""
    return {name: fn(metrics[key]) for name, (key, fn) in COMPONENTS.items()}


def alignment_score(parts: dict[str, float | None]) -> float:
    """Geometric mean of the available components (1 = perfectly aligned)."""
    vals = [max(float(v), 0.0) for v in parts.values() if v is not None]
    if not vals:
        raise ValueError("no alignment component available")
    if min(vals) == 0.0:
        return 0.0
    return float(math.exp(sum(math.log(v) for v in vals) / len(vals)))
