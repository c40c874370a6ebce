"""Store frozen linear weights in a low-precision dtype for autocast training.

Under ``torch.autocast(dtype=torch.bfloat16)`` every linear layer casts its fp32 weight to bf16
on each forward and autograd keeps that bf16 copy for the backward pass. A frozen weight never
needs an fp32 master copy, so storing it in bf16 up front gives the same matmul results, drops
the per-step casts and the saved copies, and halves its resident memory. Trainable weights (the
expanded blocks, interpolators) stay fp32.

Only ``nn.Linear`` weights are converted (norms and embeddings keep their dtype). After this the
model must run under autocast of the same dtype (an fp32 forward without autocast would mix dtypes).

>>> import torch
>>> from probelab.models.tiny import tiny_llama
>>> from probelab.models.control import expand_model
>>> m = expand_model(tiny_llama(), num_expanded=2)
>>> store_frozen_linears(m, torch.bfloat16) > 0
True
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def store_frozen_linears(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Convert the weights (and biases) of frozen ``nn.Linear`` modules to ``dtype``; return how many
    parameters were converted. Tied weights (e.g. lm_head tied to the embeddings) are left alone."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    converted = 0
    for module in model.modules():
        if not isinstance(module, nn.Linear) or id(module.weight) in embedding_ids:
            continue
        params = [p for p in (module.weight, module.bias) if p is not None]
        if any(p.requires_grad for p in params):
            continue
        for p in params:
            if p.dtype != dtype:
                p.data = p.data.to(dtype)
                converted += p.numel()
    if converted:
        _own_storage(model, dtype)
    return converted


def _own_storage(model: nn.Module, converted_dtype: torch.dtype) -> None:
    """Copy every tensor not converted into memory of its own.

    A model loaded from safetensors may hold views of one memory-mapped file; while any tensor still
    points into that mapping, the pages of the converted weights' fp32 originals stay resident.
    Copying the rest (embeddings, norms, trainable blocks: a small part of the model) lets the whole
    mapping go. Parameter objects are kept, so ties and optimizer references stay valid.
    """
    for t in list(model.parameters()) + list(model.buffers()):
        if t.dtype != converted_dtype:
            t.data = t.data.clone()
