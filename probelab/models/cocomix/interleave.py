"""Mixing by interleaving (paper Sec. 3.2): ``h_1, c_1, h_2, c_2, ...`` after the insert layer.

Layout: slot ``2t`` holds token ``t``'s hidden state, slot ``2t + 1`` its continuous concept. A plain
causal mask over the doubled sequence then gives exactly what the method needs: ``h_t`` sees every
earlier token and concept, ``c_t`` additionally sees ``h_t`` and nothing later.

Positions: a concept slot gets the *same* rotary position as its token (positions ``0, 0, 1, 1, ...``).
Relative distances between tokens stay those of the layers below, the context limit stays
``max_position_embeddings`` tokens (not half of it), and ``c_t`` is distinguished from ``h_t`` by its
content and by the causal order, not by a position. (GPT-2, the paper's backbone, adds learned
positions only at the input, so the upper layers there have no per-slot position at all.)
"""
from __future__ import annotations

import torch


def interleave(h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``[B, T, d] x 2 -> [B, 2T, d]`` with ``out[:, 0::2] = h`` and ``out[:, 1::2] = c``."""
    if h.shape != c.shape:
        raise ValueError(f"interleave: shapes differ {tuple(h.shape)} vs {tuple(c.shape)}")
    return torch.stack((h, c), dim=2).flatten(1, 2)


def token_slots(x: torch.Tensor) -> torch.Tensor:
    """The token hidden states of an interleaved sequence (``[B, 2T, ...] -> [B, T, ...]``)."""
    return x[:, 0::2]


def concept_slots(x: torch.Tensor) -> torch.Tensor:
    """The concept slots of an interleaved sequence; next-token logits are read from these."""
    return x[:, 1::2]


def double(t: torch.Tensor) -> torch.Tensor:
    """Repeat every position twice along dim 1: masks and position ids for the interleaved sequence."""
    return t.repeat_interleave(2, dim=1)


def causal_mask(key_valid: torch.Tensor, q_len: int) -> torch.Tensor:
    """Boolean attention mask ``[B, 1, q_len, K]`` (True = may attend) for the last ``q_len`` of ``K`` slots.

    ``key_valid [B, K]`` marks real (non-padding) slots, cached ones included. Query ``i`` sits at
    slot ``K - q_len + i`` and sees valid slots up to itself. Every slot also sees itself, so a
    padding row is never empty (an all-masked row would make SDPA return NaN).
    """
    B, K = key_valid.shape
    q_pos = torch.arange(K - q_len, K, device=key_valid.device)[:, None]
    k_pos = torch.arange(K, device=key_valid.device)[None, :]
    allowed = (k_pos <= q_pos)[None] & key_valid.bool()[:, None, :]
    allowed = allowed | (k_pos == q_pos)[None]
    return allowed[:, None]


def for_attention(mask: torch.Tensor, attn_implementation: str | None, dtype: torch.dtype) -> torch.Tensor:
    """Convert a boolean mask to what the attention kernel takes: bool for SDPA, additive for eager."""
    if attn_implementation == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min)
    return mask
