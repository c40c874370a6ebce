"""Run a frozen teacher with its residual stream at one site exposed as a gradient leaf.

``residual_leaf(model, index)`` swaps the residual state at :mod:`probelab.capture` index
``index`` (0 = input of block 0, i = output of block i-1) for a detached copy that requires grad,
and freezes every parameter for the duration. The blocks below the site therefore build no
autograd graph and no parameter ever gets a gradient: the only thing differentiated is the
activation, as CoCoMix's teacher needs.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..capture import decoder_layers


class Leaf:
    """Holds the residual tensor captured at the site (``.h``, ``[B, T, d]``, requires grad)."""

    h: torch.Tensor | None = None


@contextlib.contextmanager
def frozen(model) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on every parameter that had it on."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def residual_leaf(model, index: int, replace: torch.Tensor | None = None) -> Iterator[Leaf]:
    """Expose the residual at ``index`` as ``leaf.h`` (a grad leaf); optionally substitute ``replace``."""
    layers = decoder_layers(model)
    leaf = Leaf()

    def swap(h: torch.Tensor) -> torch.Tensor:
        new = (replace if replace is not None else h).detach().to(h.device, h.dtype).requires_grad_(True)
        leaf.h = new
        return new

    if index == 0:
        def pre_hook(_mod, args, kwargs):
            if args:
                return (swap(args[0]), *args[1:]), kwargs
            kwargs = dict(kwargs, hidden_states=swap(kwargs["hidden_states"]))
            return args, kwargs

        handle = layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        def post_hook(_mod, _args, out):
            if isinstance(out, (tuple, list)):
                return type(out)((swap(out[0]), *out[1:]))
            return swap(out)

        handle = layers[index - 1].register_forward_hook(post_hook)
    try:
        with frozen(model):
            yield leaf
    finally:
        handle.remove()
