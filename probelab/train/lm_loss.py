"""Next-token cross-entropy straight from the final hidden states, in chunks (no [tokens, vocab] logits kept).

A causal LM's loss is usually computed from the full logits tensor ``[B, T, V]``: with SmolLM2's
49,152-token vocabulary and 512 tokens that is 25M values, kept (and upcast to fp32, soft-maxed and
differentiated) alongside every activation of the step. :func:`chunked_lm_loss` computes the same
mean next-token loss from the final hidden states and the unembedding matrix, ``chunk`` tokens at a
time, and works out the gradient of each chunk during the forward pass (the softmax minus the
one-hot target is all the backward needs), so only ``[chunk, V]`` logits ever exist. The FLOPs are
those of the usual path; the memory for logits drops from ``T x V`` to ``chunk x V``. When the
unembedding itself is trained (full fine-tune, tied embeddings) its fp32 ``[V, d]`` gradient is
computed in the forward and held until the backward, so the saving is smaller there.

Under ``torch.autocast`` the matmuls run in the autocast dtype and the softmax in fp32, as the
usual path does. Gradients reach the hidden states and, when it requires grad, the unembedding.

>>> import torch
>>> h, w = torch.randn(2, 5, 8), torch.randn(11, 8)
>>> ids = torch.randint(0, 11, (2, 5))
>>> logits = h @ w.T
>>> ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1))
>>> torch.allclose(chunked_lm_loss(h, w, ids, chunk=3), ref, atol=1e-6)
True
"""
from __future__ import annotations

import weakref

import torch
from torch.autograd.function import once_differentiable

from ..errors import ProbelabError

IGNORE_INDEX = -100
_CHECKED: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()  # models whose logits passed the check


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


class _ChunkedLinearCE(torch.autograd.Function):
    """Sum of token losses of ``hidden [N, d] @ weight[V, d].T`` against ``targets [N]``, and its gradients."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, dtype: torch.dtype):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        w = weight.to(dtype)
        acc = torch.promote_types(dtype, torch.float32)  # softmax and sums: at least fp32
        total = torch.zeros((), dtype=acc, device=hidden.device)
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s:s + chunk].to(dtype)
            y = targets[s:s + chunk]
            valid = y != IGNORE_INDEX
            logits = (h @ w.T).to(acc)
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, y.clamp(min=0).unsqueeze(1)).squeeze(1)
            total += torch.where(valid, lse - picked, torch.zeros_like(lse)).sum()
            if not (need_h or need_w):
                continue
            g = torch.exp(logits.sub_(lse.unsqueeze(1)))  # softmax, in place of the logits
            rows = torch.arange(g.shape[0], device=g.device)
            g[rows[valid], y[valid]] -= 1.0
            g.mul_(valid.unsqueeze(1).to(g.dtype))
            g = g.to(dtype)
            if need_h:
                grad_h[s:s + chunk] = (g @ w).to(hidden.dtype)
            if need_w:
                grad_w += (g.T @ h).to(acc)
        ctx.save_for_backward(*(t for t in (grad_h, grad_w) if t is not None))
        ctx.has = (need_h, need_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        saved = list(ctx.saved_tensors)
        need_h, need_w = ctx.has
        gh = gw = None
        if need_h:
            g = saved.pop(0)
            gh = g * grad_out.to(g.dtype)
        if need_w:
            gw = (saved.pop(0) * grad_out).to(ctx.weight_dtype)
        return gh, gw, None, None, None


def chunked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """Mean next-token CE of ``hidden [B, T, d]`` (after the final norm) through ``weight [V, d]``.

    ``labels`` follow HF's causal-LM convention: ``[B, T]``, shifted by one inside, -100 ignored.
    Equal to ``cross_entropy((hidden @ weight.T)[:, :-1], labels[:, 1:], ignore_index=-100)`` to
    float rounding.
    """
    if hidden.dim() != 3 or labels.shape != hidden.shape[:2]:
        raise ValueError(f"hidden must be [B, T, d] matching labels [B, T]; got {tuple(hidden.shape)} "
                         f"and {tuple(labels.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if weight.device != hidden.device:
        raise ValueError(f"the unembedding is on {weight.device} but the hidden states on {hidden.device}")
    if not torch.is_grad_enabled():  # no gradient work in the forward (evaluation)
        hidden, weight = hidden.detach(), weight.detach()
    targets = labels[:, 1:].reshape(-1)
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    count = (targets != IGNORE_INDEX).sum().clamp(min=1)
    total = _ChunkedLinearCE.apply(h, weight, targets, chunk, _compute_dtype(h))
    return total / count


def lm_loss_from_model(model, batch: dict, chunk: int):
    """Run a causal LM on ``batch`` (input_ids, attention_mask, labels) and return ``(output, ce)`` with
    the CE computed by :func:`chunked_lm_loss` (the model computes logits for the last position only).

    A model that transforms its logits (an unembedding bias, a logit scale, soft-capping) would get
    a wrong loss here, so it is refused with a one-line error: the config and the output layer are
    checked, and the one logits row the model does compute is compared with ``hidden @ weight.T``
    (on the model's first call only).
    """
    head = model
    while hasattr(head, "module") or hasattr(head, "_orig_mod"):  # DDP / DeepSpeed / torch.compile wrappers
        head = getattr(head, "module", None) or head._orig_mod
    out_layer = head.get_output_embeddings()
    configs = [head.config, getattr(head.config, "base_config", None)]  # a Control LLM keeps the base's
    transforms = [k for c in configs if c is not None for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")
                  if getattr(c, k, None) not in (None, 1, 1.0)]
    if getattr(out_layer, "bias", None) is not None:
        transforms.append("an unembedding bias")
    if transforms:
        raise ProbelabError(f"{type(head).__name__} transforms its logits ({', '.join(transforms)}): "
                            "use the model's own loss (train.loss_chunk=0)")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs, logits_to_keep=1, output_hidden_states=True, use_cache=False)
    weight = out_layer.weight
    hidden = out.hidden_states[-1]
    if head not in _CHECKED:
        with torch.no_grad():
            mine = (hidden[:, -1].to(_compute_dtype(hidden)) @ weight.to(_compute_dtype(hidden)).T).float()
            theirs = out.logits[:, -1].float()
            if (mine - theirs).abs().max() > 1e-2 * theirs.abs().max() + 1e-3:
                raise ProbelabError(f"{type(head).__name__} does not compute its logits as hidden @ unembedding "
                                    "(bias, scale or soft-cap): use the model's own loss (train.loss_chunk=0)")
        _CHECKED.add(head)
    return out, chunked_lm_loss(hidden, weight, batch["labels"], chunk)


def check_chunking_supported(distributed_type: str, zero_stage: int | None = None) -> None:
    """Refuse chunking where the unembedding is sharded across processes (FSDP, DeepSpeed ZeRO-3):
    the chunked loss reads the weight outside the model's forward, where only a shard is present.
    ``distributed_type``: accelerate's ``DistributedType`` value (``"NO"``, ``"MULTI_CPU"``, ``"FSDP"``...)."""
    if distributed_type == "FSDP" or (distributed_type == "DEEPSPEED" and zero_stage == 3):
        how = "FSDP" if distributed_type == "FSDP" else "DeepSpeed ZeRO-3"
        raise ProbelabError(f"train.loss_chunk reads the unembedding outside the model's forward, which {how} "
                            "shards: set train.loss_chunk=0")


def causal_lm_loss(model, batch: dict, chunk: int = 0):
    """``(output, ce)`` of a causal LM on ``batch``: the model's own loss (``chunk=0``) or
    :func:`lm_loss_from_model` with ``chunk`` tokens per piece."""
    if chunk:
        return lm_loss_from_model(model, batch, chunk)
    out = model(**batch, use_cache=False)
    return out, out.loss
