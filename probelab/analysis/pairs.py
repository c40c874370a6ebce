"""Semantic stability of analogy pairs.

An analogy pair is two probe sentences that share a ``pair_id`` ("king is to queen" / "man is to
woman", ``side`` 0 and 1). On each side of the comparison (pretrained / expanded branch, or base /
fine-tuned model) we ask:

- **pair cosine**: how similar the two sentences of a pair are, per layer. The paper's Figure 8
  reads this on L2-normalised last-token states; it is stable when a model keeps its semantics.
- **pair cosine change**: expanded minus pretrained pair cosine.
- **offset consistency**: the analogy offset of a pair is ``h(sentence 1) - h(sentence 0)``, the
  direction that separates its two relations' instances; its cosine between the two sides says
  whether the expanded side still encodes the relation along the same direction.

>>> import numpy as np
>>> x = np.eye(4)[None]                      # one layer, 4 probes, d = 4
>>> pair_cosine(x, np.array([0, 2]), np.array([1, 3])).tolist()
[[0.0, 0.0]]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import cosine


@dataclass(frozen=True)
class PairIndex:
    """Positions (in the probe list) of the two sentences of every complete pair."""
    first: np.ndarray   # [P] index of the side-0 sentence
    second: np.ndarray  # [P] index of the side-1 sentence
    pair_ids: list
    categories: list[str]

    def __len__(self) -> int:
        return len(self.pair_ids)


def pair_index(items) -> PairIndex:
    """Group probes by ``pair_id``; pairs that lack one of their two sides are left out."""
    sides: dict = {}
    cats: dict = {}
    for i, p in enumerate(items):
        if getattr(p, "pair_id", None) is None:
            continue
        sides.setdefault(p.pair_id, {})[int(p.side)] = i
        cats.setdefault(p.pair_id, p.category or "")
    complete = [pid for pid, s in sides.items() if 0 in s and 1 in s]
    return PairIndex(
        first=np.array([sides[p][0] for p in complete], dtype=int),
        second=np.array([sides[p][1] for p in complete], dtype=int),
        pair_ids=complete,
        categories=[cats[p] for p in complete],
    )


def pair_cosine(x: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine of the two sentences of each pair: ``[n_layers, n_pairs]``."""
    return cosine(x[:, first], x[:, second])


def offsets(x: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Analogy offsets ``h(second) - h(first)``: ``[n_layers, n_pairs, d]``."""
    x = np.asarray(x, dtype=np.float64)
    return x[:, second] - x[:, first]


def offset_consistency(a: np.ndarray, b: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine between each pair's offset on side ``a`` and on side ``b``: ``[n_layers, n_pairs]``."""
    return cosine(offsets(a, first, second), offsets(b, first, second))


def stability(a: np.ndarray, b: np.ndarray, index: PairIndex) -> dict[str, np.ndarray]:
    """Per-(layer, pair) semantic-stability numbers, by name."""
    pa = pair_cosine(a, index.first, index.second)
    pb = pair_cosine(b, index.first, index.second)
    return {
        "pair_cosine_pretrained": pa,
        "pair_cosine_expanded": pb,
        "pair_cosine_change": pb - pa,
        "offset_consistency": offset_consistency(a, b, index.first, index.second),
    }
