"""Per-position gradients in one backward pass: an attention whose gradient stays on the diagonal.

Paper Eq. 1 needs, for every position t, the gradient of *that position's* next-token loss L_t
with respect to the residual h_t (other positions held fixed). Backpropagating ``sum_t L_t``
through normal attention mixes in dL_s/dh_t for later positions s > t. This attention computes
exactly the same values as eager attention, but routes gradients so that query position t only
sees gradients through its own key and value; other positions' keys and values act as constants:

    scores[t, s] = q_t . stop_grad(k_s)          + [s == t] q_t . (k_t - stop_grad(k_t))
    out[t]       = sum_s a[t, s] stop_grad(v_s)  + a[t, t] (v_t - stop_grad(v_t))

The added terms are zero in value, so the forward pass is unchanged. Every layer above the SAE
site then connects position t only to h_t in the autograd graph, and one backward pass of
``sum_t L_t`` yields dL_t/dh_t for all t at once (tested against a per-position loop).

It is plugged in through transformers' public ``AttentionInterface`` / ``AttentionMaskInterface``
registries and ``model.set_attn_implementation``, so nothing in transformers is patched.
"""
from __future__ import annotations

import torch

from ..errors import ProbelabError
from ..models.attention import attention_implementation

NAME = "probelab_diagonal_grad"
_registered = False


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def diagonal_grad_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention (same values) with cross-position gradients cut; see the module docstring."""
    n_rep = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    tq, tk = query.shape[2], key.shape[2]
    if tq != tk:
        raise ProbelabError("diagonal-gradient attention needs a full sequence (no KV cache)")
    k_const, v_const = key.detach(), value.detach()
    scores = torch.matmul(query, k_const.transpose(2, 3))
    own = (query * (key - k_const)).sum(-1)  # [B, H, T], zero in value
    scores = scores + torch.diag_embed(own)
    scores = scores * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask[..., :tk], torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask[..., :tk]
    else:
        causal = torch.ones(tq, tk, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(query.dtype)
    out = torch.matmul(weights, v_const)
    diag = torch.diagonal(weights, dim1=-2, dim2=-1).unsqueeze(-1)  # a[t, t]: [B, H, T, 1]
    out = out + diag * (value - v_const)
    return out.transpose(1, 2).contiguous(), weights


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, diagonal_grad_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
    _registered = True


def diagonal_gradients(model):
    """Run ``model`` with :func:`diagonal_grad_attention` in every layer; restore its attention after."""
    _register()
    return attention_implementation(model, NAME, "; use loss='sequence' for this model")
