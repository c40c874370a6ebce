"""Hidden-state capture: ``capture(model, tokenizer, texts, select=...)`` → :class:`Captures`.

Backends are a registry: ``hf`` (default; batched, hooks on the model's blocks, exposes extra
streams of recordable models such as Control LLM) and ``transformer-lens`` (TransformerBridge
``run_with_cache``, for users who want TL hook names). Both return the same container and agree.
"""
from __future__ import annotations

from typing import Callable

from ..errors import CaptureError
from .container import Captures, ShardedStates
from .hf import SELECTIONS, capture_hf, mean_keep, position_ids_from_mask
from .recorder import Recorder, decoder_layers, hook_residual, record

BACKENDS: dict[str, Callable[..., Captures]] = {"hf": capture_hf}


def register_backend(name: str, fn: Callable[..., Captures]) -> None:
    BACKENDS[name] = fn


def capture(model, tokenizer, texts, select: str = "last", backend: str = "hf", **kwargs) -> Captures:
    """Residual-stream states after every layer (and the embeddings) for ``texts``.

    ``select``: ``last`` (last real token), ``mean`` (mean over real tokens except the first, an
    attention sink; ``include_first=True`` keeps it) or ``all`` (every real token, ragged).
    States come back float32 on the CPU for any model device, dtype or ``device_map``.
    Extra keyword arguments go to the backend: ``batch_size``, ``max_length``, ``progress``,
    ``layers`` (only these resid indices; the forward pass stops after the last one), ``out``
    (a folder: states stream to safetensors shards while capturing, for corpora larger than memory;
    ``overwrite``), ``include_first``. See :mod:`probelab.capture.hf`.
    """
    if backend == "transformer-lens" and backend not in BACKENDS:
        from . import tl  # noqa: F401  (registers itself; imports transformer-lens lazily)
    if backend not in BACKENDS:
        raise CaptureError(f"unknown capture backend {backend!r}; choose one of {', '.join(BACKENDS)}, transformer-lens")
    if kwargs.get("max_length") is None:
        check_context(model, tokenizer, texts)
    return BACKENDS[backend](model, tokenizer, texts, select=select, **kwargs)


def check_context(model, tokenizer, texts) -> None:
    """The rule for texts longer than the model's context (``max_position_embeddings``): refused
    with one line naming the text, never run past it silently (positions beyond the context give
    meaningless states). ``max_length=`` truncates explicitly instead."""
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not context or isinstance(texts, str) or not texts or not all(isinstance(t, str) and t for t in texts):
        return  # the backend reports empty or malformed input its own way
    for i, ids in enumerate(tokenizer(list(texts), add_special_tokens=True)["input_ids"]):
        if len(ids) > context:
            raise CaptureError(f"text {i + 1} has {len(ids):,} tokens, more than the model's context of {context:,} "
                               "positions; shorten it (or split it), or pass max_length to truncate")


__all__ = ["capture", "Captures", "Recorder", "record", "hook_residual", "decoder_layers", "SELECTIONS",
           "register_backend", "BACKENDS", "position_ids_from_mask", "mean_keep", "ShardedStates"]
