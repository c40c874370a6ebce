"""Continual-learning methods: each turns a loaded base model into the model to train and sets
``requires_grad`` on exactly the parameters that method trains. Adding a method is one entry.

- ``full``: every parameter (the forgetting baseline).
- ``partial``: 1 of every ``every`` blocks (the blocks Control LLM would expand), rest frozen.
- ``stack``: LLaMA-Pro — insert ``num_expanded`` identity-initialised blocks, originals frozen.
- ``hybrid``: alternate stack and concat expansion points.
- ``control``: Control LLM (concat) with any interpolator and divergence loss.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import ProbelabError


def _full(model, m):
    model.requires_grad_(True)
    return model


def partial_layer_indices(num_layers: int, every: int) -> list[int]:
    """Blocks ``i`` with ``(i + 1) % every == 0``: for 30 layers and every=5, 4, 9, ..., 29."""
    if every > num_layers:
        raise ProbelabError(f"method.every={every} is larger than the model's {num_layers} layers")
    return [i for i in range(num_layers) if (i + 1) % every == 0]


def _partial(model, m):
    from ..capture import decoder_layers

    blocks = decoder_layers(model)
    model.requires_grad_(False)
    for i in partial_layer_indices(len(blocks), m.every):
        blocks[i].requires_grad_(True)
    return model


def _expansion(strategy: str):
    def build(model, m):
        from ..models.control import ExpansionConfig, expand_model

        cfg = ExpansionConfig(strategy=strategy, interpolation=m.interpolation, num_expanded=m.num_expanded,
                              divergence=m.divergence, alpha=m.alpha, preset=m.preset,
                              freeze_interpolator=m.freeze_interpolator, gate_init=m.gate_init or None,
                              moe_divergence=m.moe_divergence or None, detach_alpha=m.detach_alpha)
        return expand_model(model, cfg)
    return build


METHODS: dict[str, Callable] = {
    "full": _full,
    "partial": _partial,
    "stack": _expansion("stack"),
    "hybrid": _expansion("hybrid"),
    "control": _expansion("concat"),
}


def apply_method(model: torch.nn.Module, method_cfg) -> torch.nn.Module:
    """Return the model to train for ``method_cfg`` (a :class:`~probelab.train.config.MethodCfg`)."""
    if method_cfg.name not in METHODS:
        raise ProbelabError(f"unknown method {method_cfg.name!r}; known: {', '.join(METHODS)}")
    out = METHODS[method_cfg.name](model, method_cfg)
    if not any(p.requires_grad for p in out.parameters()):
        raise ProbelabError(f"method {method_cfg.name!r} left no trainable parameters")
    return out


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts (shared tensors counted once)."""
    seen, train, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        train += p.numel() if p.requires_grad else 0
    return train, total
