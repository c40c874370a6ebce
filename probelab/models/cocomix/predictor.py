"""Concept prediction (paper Sec. 3.2): ``z_t = W_pred(LN(h_t) - b_pre)``.

The LayerNorm has no parameters: it only centres and scales ``h_t``, and its ``mu``/``std`` are
kept so the compressor can undo it. ``b_pre`` (``pre_bias``) is shared with the compressor, the way
an SAE subtracts its decoder bias before encoding and adds it back after decoding.
"""
from __future__ import annotations

import torch
from torch import nn


def normalize(h: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Parameter-free LayerNorm over the last dim: returns ``(x, mu, std)`` with ``h = x * std + mu``."""
    mu = h.mean(dim=-1, keepdim=True)
    centred = h - mu
    std = centred.pow(2).mean(dim=-1, keepdim=True).add(eps).sqrt()
    return centred / std, mu, std


class ConceptPredictor(nn.Module):
    """``h [B, T, d] -> (z [B, T, C], mu, std)``: concept logits and the normalisation statistics."""

    def __init__(self, hidden_size: int, n_concepts: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.pre_bias = nn.Parameter(torch.zeros(hidden_size))
        self.proj = nn.Linear(hidden_size, n_concepts)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, mu, std = normalize(h, self.eps)
        return self.proj(x - self.pre_bias), mu, std
