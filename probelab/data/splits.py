"""Deterministic, disjoint splits: a seeded permutation cut into consecutive pieces."""
from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")


def seeded_split(items: Sequence[T], sizes: Sequence[int | None], seed: int) -> list[list[T]]:
    """Shuffle ``items`` with ``seed`` and cut consecutive pieces of the given sizes.

    A size of ``None`` takes everything left. Pieces never share a position, so they are disjoint
    whenever ``items`` has no duplicates. The same seed always gives the same pieces.

    >>> seeded_split(list(range(10)), [3, None], seed=0)[0]
    [7, 8, 1]
    """
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    pieces, start = [], 0
    for size in sizes:
        stop = len(order) if size is None else start + size
        if stop > len(order):
            raise ValueError(f"asked for {sum(s or 0 for s in sizes)} items, only {len(items)} available")
        pieces.append([items[i] for i in order[start:stop]])
        start = stop
    return pieces
