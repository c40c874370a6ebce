"""Which attention implementation a model runs, switched through transformers' public API.

On CPU, PyTorch's fused SDPA kernel is slow in bf16 at short sequence lengths, above all in the
backward pass. At SmolLM2-135M's attention shape (``.venv/bin/python bench/attention_cpu.py
--tokens T [--dtype float32]``, 2 threads) SDPA / eager forward + backward time was, in bf16, 3.0x
at 128 tokens, 1.6x at 256, 1.5x at 384, but 0.9x at 512 and 0.3x at 2048; in fp32 SDPA was the
faster one at every length (0.92x at 128, 0.78x at 384). Eager attention also keeps a
``[batch, heads, T, T]`` softmax per layer for the backward pass. So :func:`auto_attention` picks
eager on CPU for bf16 / fp16 compute, sequences of at most :data:`EAGER_MAX_TOKENS` tokens and
softmaxes that fit in :data:`EAGER_BUDGET_BYTES` (a rough bound: it counts every layer and leaves
out the repeated keys and values), and the model's own attention otherwise (fp32, GPUs with their
fused kernels).

>>> auto_attention("cpu", batch=4, tokens=128, heads=9, layers=36, dtype=torch.bfloat16)
'eager'
>>> auto_attention("cpu", batch=4, tokens=128, heads=9, layers=36, dtype=torch.float32) is None
True
>>> auto_attention("cpu", batch=1, tokens=512, heads=9, layers=36, dtype=torch.bfloat16) is None
True
>>> auto_attention("cuda", batch=4, tokens=128, heads=9, layers=36, dtype=torch.bfloat16) is None
True
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..errors import ProbelabError

EAGER_MAX_TOKENS = 384  # eager is faster than SDPA up to here on CPU (bench/attention_cpu.py)
EAGER_BUDGET_BYTES = 1 << 30  # eager softmaxes kept for the backward, all layers together
SOFTMAX_BYTES = 6  # per score: the fp32 softmax output and its bf16 / fp32 cast for the value matmul


def auto_attention(device: torch.device | str, batch: int, tokens: int, heads: int, layers: int,
                   dtype: torch.dtype) -> str | None:
    """``"eager"`` where it is the faster choice (CPU, half-precision compute ``dtype``, small
    attention matrices), else ``None`` (keep the model's own implementation)."""
    if torch.device(device).type != "cpu" or dtype not in (torch.bfloat16, torch.float16):
        return None
    small = tokens <= EAGER_MAX_TOKENS and batch * heads * tokens * tokens * SOFTMAX_BYTES * layers <= EAGER_BUDGET_BYTES
    return "eager" if small else None


def choose_attention(name: str | None, model, device: torch.device | str, batch: int, tokens: int,
                     dtype: torch.dtype, extra_layers: int = 0) -> str | None:
    """The implementation to switch ``model`` to for a user's ``name``, or ``None`` to keep its own:
    ``"auto"`` applies :func:`auto_attention` to the model's shape (``extra_layers``: attention
    layers an expansion will add), ``"model"`` or ``None`` keep the model's own, any other name is
    returned as it is."""
    if name in (None, "model"):
        return None
    if name != "auto":
        return name
    heads, layers = attention_shape(model)
    return auto_attention(device, batch, tokens, heads, layers + extra_layers, dtype)


def attention_shape(model) -> tuple[int, int]:
    """``(heads, attention layers)`` of an HF decoder (a Control LLM counts its expanded copies too)."""
    text = model.config.get_text_config()
    return int(text.num_attention_heads), int(text.num_hidden_layers)


def switch_attention(model, name: str, hint: str = "") -> None:
    """Set the attention implementation (one-line error, and the old one kept, if impossible)."""
    previous = model.config._attn_implementation
    if previous == name:
        return
    try:
        model.set_attn_implementation(name)
    except Exception as e:
        raise ProbelabError(f"{type(model).__name__} cannot switch attention implementation to {name} "
                            f"({str(e).splitlines()[0]}){hint}") from None
    if model.config._attn_implementation != name:
        model.set_attn_implementation(previous)
        raise ProbelabError(f"{type(model).__name__} does not support the {name} attention{hint}")


@contextlib.contextmanager
def attention_implementation(model, name: str, hint: str = "", optional: bool = False) -> Iterator[None]:
    """Run ``model`` with the attention implementation ``name``; restore the previous one after.
    ``optional``: a model that cannot switch keeps its own attention instead of raising."""
    previous = model.config._attn_implementation
    try:
        switch_attention(model, name, hint)
    except ProbelabError:
        if not optional:
            raise
    # not thread-safe: the switch changes the shared model (the app holds its model lock around it)
    try:
        yield
    finally:
        if model.config._attn_implementation != previous:
            model.set_attn_implementation(previous)
