"""Offline data for continual-SFT experiments, and the real online loaders behind explicit options.

Every offline source is a data file shipped inside a PyPI package, read by path (the carrier
packages are never imported). Splits are deterministic functions of a seed and never overlap.

>>> from probelab.data import skill_task
>>> task = skill_task("add3")
>>> train, test = task.split(n_train=4, n_eval=2, seed=0)
>>> {ex.prompt for ex in train} & {ex.prompt for ex in test}
set()
"""
from .examples import Example
from .gsm8k import gsm8k_test
from .mmlu import MCItem, mmlu_items
from .skills import SKILL_TASKS, SkillTask, skill_task
from .wiki import wiki_intros, wiki_split

__all__ = ["Example", "gsm8k_test", "MCItem", "mmlu_items", "SKILL_TASKS", "SkillTask", "skill_task",
           "wiki_intros", "wiki_split"]
