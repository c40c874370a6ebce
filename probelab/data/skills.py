"""Procedural "new skill" tasks: unlimited, exactly checkable, and disjoint train/eval splits.

A continual-SFT experiment needs a skill the base model lacks but can learn within the budget.
SmolLM2-135M-Instruct gets 0/60 three-digit additions right (prompt "Question: What is 347 + 589?\nAnswer:"), so arithmetic in a
fixed "Question/Answer" format is the CPU table's new skill. Adding a task is adding one entry
to :data:`SKILL_TASKS`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from ..errors import ProbelabError
from .examples import Example

PROMPT = "Question: What is {q}?\nAnswer:"


def _binary(op: str, fn: Callable[[int, int], int], lo: int, hi: int):
    def make(rng: random.Random) -> tuple[str, str]:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        return PROMPT.format(q=f"{a} {op} {b}"), str(fn(a, b))
    return make


def _chain(n_terms: int, lo: int, hi: int):
    def make(rng: random.Random) -> tuple[str, str]:
        xs = [rng.randint(lo, hi) for _ in range(n_terms)]
        return PROMPT.format(q=" + ".join(map(str, xs))), str(sum(xs))
    return make


@dataclass(frozen=True)
class SkillTask:
    name: str
    description: str
    make: Callable[[random.Random], tuple[str, str]]

    def example(self, rng: random.Random) -> Example:
        prompt, answer = self.make(rng)
        return Example(prompt, " " + answer, answer)

    def split(self, n_train: int, n_eval: int, seed: int = 0) -> tuple[list[Example], list[Example]]:
        """``n_train`` training and ``n_eval`` evaluation examples with no prompt in common.

        The eval set is drawn first from its own seeded stream; the training stream skips every
        eval prompt and every repeat, so the two never overlap and both are reproducible.
        """
        evals = self._unique(random.Random(f"{self.name}/eval/{seed}"), n_eval, set())
        banned = {ex.prompt for ex in evals}
        train = self._unique(random.Random(f"{self.name}/train/{seed}"), n_train, banned)
        return train, evals

    def _unique(self, rng: random.Random, n: int, banned: set[str]) -> list[Example]:
        seen, out = set(banned), []
        for _ in range(100 * n + 1000):
            if len(out) == n:
                return out
            ex = self.example(rng)
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                out.append(ex)
        if len(out) < n:
            raise ProbelabError(f"task {self.name!r} cannot produce {n} distinct examples")
        return out


SKILL_TASKS: dict[str, SkillTask] = {}


def register_task(task: SkillTask) -> SkillTask:
    SKILL_TASKS[task.name] = task
    return task


register_task(SkillTask("add3", "a + b with 3-digit a, b", _binary("+", lambda a, b: a + b, 100, 999)))
register_task(SkillTask("add4", "a + b with 4-digit a, b", _binary("+", lambda a, b: a + b, 1000, 9999)))
register_task(SkillTask("sub3", "a - b with 3-digit a, b (may be negative)", _binary("-", lambda a, b: a - b, 100, 999)))
register_task(SkillTask("mul2", "a * b with 2-digit a, b", _binary("*", lambda a, b: a * b, 10, 99)))
register_task(SkillTask("chain3", "sum of three 2-digit numbers", _chain(3, 10, 99)))


def skill_task(name: str) -> SkillTask:
    if name not in SKILL_TASKS:
        raise ProbelabError(f"unknown task {name!r}; known: {', '.join(SKILL_TASKS)}")
    return SKILL_TASKS[name]
