"""Expansion strategies: what happens at each chosen block.

- ``concat`` — a trainable copy runs *beside* the frozen block (same input); an interpolator
  merges the two outputs (Control LLM).
- ``stack`` — a copy is *inserted after* the block with its output projections (attention
  ``o_proj`` and MLP ``down_proj``) zeroed, so it starts as the identity (LLaMA-Pro).
- ``hybrid`` — alternate stack and concat over the chosen blocks, starting with stack.

A strategy only says which of the two operations each expansion point gets; ``expand.py`` does the
surgery. Adding a strategy is adding one class decorated with ``@register_strategy("name")``.
"""
from __future__ import annotations

CONCAT, STACK = "concat", "stack"

STRATEGIES: dict[str, type["Strategy"]] = {}


def register_strategy(name: str):
    def deco(cls):
        STRATEGIES[name] = cls
        cls.kind = name
        return cls
    return deco


class Strategy:
    kind = ""

    def operations(self, num_points: int) -> list[str]:
        """``concat`` or ``stack`` for each expansion point, in layer order."""
        raise NotImplementedError


@register_strategy("concat")
class Concat(Strategy):
    def operations(self, num_points):
        return [CONCAT] * num_points


@register_strategy("stack")
class Stack(Strategy):
    def operations(self, num_points):
        return [STACK] * num_points


@register_strategy("hybrid")
class Hybrid(Strategy):
    def operations(self, num_points):
        return [STACK if k % 2 == 0 else CONCAT for k in range(num_points)]


def operations_for(strategy: str, num_points: int) -> list[str]:
    return STRATEGIES[strategy]().operations(num_points)
