"""Concept compression (paper Sec. 3.2): ``c_t = W_comp TopK(z_t) + b_pre``, then de-normalised.

TopK keeps the k largest *raw* logits (no softmax, no ReLU) and zeroes the rest, so the continuous
concept is a sparse mixture of k decoder columns. Adding ``b_pre`` and undoing the predictor's
LayerNorm (``* std + mu``) puts ``c_t`` back on the scale of the token hidden states it is
interleaved with.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def topk_sparse(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``k`` largest entries of ``z`` along the last dim: ``(sparse z, chosen ids [.., k])``.

    >>> s, ids = topk_sparse(torch.tensor([[0.1, 3.0, -2.0, 1.0]]), 2)
    >>> s.tolist(), sorted(ids[0].tolist())
    ([[0.0, 3.0, 0.0, 1.0]], [1, 3])
    """
    values, ids = z.topk(k, dim=-1)
    return torch.zeros_like(z).scatter(-1, ids, values), ids


class ConceptCompressor(nn.Module):
    """``(z, mu, std, pre_bias) -> (c [B, T, d], chosen concept ids [B, T, k])``."""

    def __init__(self, n_concepts: int, hidden_size: int, topk: int):
        super().__init__()
        self.topk = topk
        self.proj = nn.Linear(n_concepts, hidden_size, bias=False)

    def forward(self, z: torch.Tensor, mu: torch.Tensor, std: torch.Tensor,
                pre_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, ids = z.topk(self.topk, dim=-1)
        # W_comp @ TopK(z), computed on the k kept entries only: gather their k columns of W_comp
        # instead of multiplying a mostly-zero [.., C] vector (same value, ~C/k times less work)
        columns = F.embedding(ids, self.proj.weight.t())  # [.., k, d]
        c = (values.unsqueeze(-1).to(columns.dtype) * columns).sum(-2) + pre_bias
        return c * std + mu, ids

    def column_norms(self) -> torch.Tensor:
        """L2 norm of each concept's column of ``W_comp`` (``[C]``); paper Fig. 6c looks at their sparsity."""
        return self.proj.weight.detach().float().norm(dim=0)
