"""Recording hidden states during one forward pass.

A :class:`Recorder` is a sink: ``put(stream, layer, tensor[B, T, d])``. :func:`hook_residual`
fills the ``resid`` stream of any HF decoder through forward hooks on its block list. Models with
extra streams (a Control LLM layer has a pretrained and an expanded branch) implement the
*recordable* protocol: ``model.attach_recorder(recorder)`` is a context manager during which the
model calls ``recorder.put`` for its own streams. Nothing in transformers is patched.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Iterator

import torch
from torch import nn

from ..errors import ProbelabError

_LAYER_PATHS = ("model.layers", "model.model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")


class Recorder:
    """Keeps ``data[stream][layer]``; a later ``put`` of the same stream and layer replaces the earlier.

    ``transform(stream, layer, value)``, when given, runs on every put (e.g. token selection and a move
    to the CPU, so a GPU holds no recorded activations); what it returns is kept, ``None`` keeps nothing.
    """

    def __init__(self, transform=None) -> None:
        self.data: dict[str, dict[int, torch.Tensor]] = defaultdict(dict)
        self.transform = transform

    def put(self, stream: str, layer: int, value: torch.Tensor) -> None:
        value = value.detach()
        if self.transform is not None:
            value = self.transform(stream, layer, value)
            if value is None:
                return
        self.data[stream][layer] = value

    def clear(self) -> None:
        self.data = defaultdict(dict)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of an HF decoder-only model."""
    for path in _LAYER_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ProbelabError(f"{type(model).__name__} is not a supported decoder-only model (no block list found)")


def _first_tensor(out):
    return out[0] if isinstance(out, (tuple, list)) else out


@contextlib.contextmanager
def hook_residual(model: nn.Module, recorder: Recorder) -> Iterator[None]:
    """Record ``resid``: the first block's input (layer 0) and every block's output (layer i+1)."""
    layers = decoder_layers(model)
    handles = []

    def pre_hook(_mod, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        recorder.put("resid", 0, h)

    handles.append(layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True))
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(
            lambda _m, _a, out, i=i: recorder.put("resid", i + 1, _first_tensor(out))))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def record(model: nn.Module, recorder: Recorder) -> Iterator[Recorder]:
    """Record ``resid`` and, for recordable models, their extra streams."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(hook_residual(model, recorder))
        attach = getattr(model, "attach_recorder", None)
        if attach is not None:
            stack.enter_context(attach(recorder))
        yield recorder
