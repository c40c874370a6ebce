"""Merge-back: fold a Lerp Control LLM into the base architecture by interpolating weights.

For each concat layer with a scalar Lerp weight w, the merged block's parameters are
``(1 - w)·θ_pretrained + w·θ_expanded``. The result is a plain HF model of the base class
(inserted stack blocks, if any, stay as extra layers). It is an approximation: blocks are
nonlinear, so a weight-space lerp equals the output-space lerp only when the two branches agree
(at init, or when w is 0 or 1). Measure the gap on your data before relying on it.

>>> from probelab.models.tiny import tiny_llama
>>> from probelab.models.control import expand_model
>>> plain = merge_lerp(expand_model(tiny_llama(), num_expanded=2))
>>> type(plain).__name__, plain.config.num_hidden_layers
('LlamaForCausalLM', 4)
"""
from __future__ import annotations

import copy

import torch

from ...capture import decoder_layers
from .config import ExpansionError
from .interpolators import Lerp
from .layer import ControlLayer


@torch.no_grad()
def merge_lerp(model):
    """A base-architecture copy of a Lerp Control LLM (``model`` is left unchanged)."""
    controls = [b for b in decoder_layers(model.model) if isinstance(b, ControlLayer)]
    if any(not isinstance(c.interpolator, Lerp) for c in controls):
        raise ExpansionError(f"merge-back needs scalar Lerp interpolators, this model uses "
                             f"{model.expansion.interpolation!r}")
    inner = copy.deepcopy(model.model)
    layers = decoder_layers(inner)
    for pos, block in enumerate(layers):
        if not isinstance(block, ControlLayer):
            continue
        w = torch.sigmoid(block.interpolator.logit.float())
        merged = block.pretrained
        exp = dict(block.expanded.named_parameters())
        for name, p in merged.named_parameters():
            p.copy_(((1 - w) * p.float() + w * exp[name].float()).to(p.dtype))
        layers[pos] = merged
    inner.requires_grad_(True)
    return inner
