"""Divergence losses: keep the expanded branch's hidden states close to the pretrained ones.

A divergence maps ``(h_pre, h_exp)`` (``[B, T, d]``) to a per-token loss ``[B, T]``;
:func:`masked_token_mean` then averages it over real tokens only (the official code averages over
padding too, so the loss depended on how a batch was padded). Adding a divergence is adding one
class decorated with ``@register_divergence("name")``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ExpansionConfig

DIVERGENCES: dict[str, type["Divergence"]] = {}


def register_divergence(name: str):
    def deco(cls):
        DIVERGENCES[name] = cls
        cls.kind = name
        return cls
    return deco


def build_divergence(cfg: ExpansionConfig) -> "Divergence":
    return DIVERGENCES[cfg.divergence](cfg)


class Divergence:
    kind = ""
    active = True

    def __init__(self, cfg: ExpansionConfig) -> None:
        self.cfg = cfg

    def per_token(self, h_pre: torch.Tensor, h_exp: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_divergence("mse")
class MSE(Divergence):
    """mean over d of (h_exp - h_pre)^2."""

    def per_token(self, h_pre, h_exp):
        return (h_exp.float() - h_pre.float()).pow(2).mean(-1)


@register_divergence("cosine")
class Cosine(Divergence):
    """smooth-L1 of relu(1 - margin - cos(h_pre, h_exp)): zero while the cosine stays above 1 - margin."""

    def per_token(self, h_pre, h_exp):
        cos = F.cosine_similarity(h_pre.float(), h_exp.float(), dim=-1, eps=1e-8)
        gap = torch.relu(1.0 - self.cfg.cosine_margin - cos)
        return F.smooth_l1_loss(gap, torch.zeros_like(gap), reduction="none")


@register_divergence("none")
class NoDivergence(Divergence):
    active = False

    def per_token(self, h_pre, h_exp):
        return h_pre.new_zeros(h_pre.shape[:-1], dtype=torch.float32)


def masked_token_mean(loss: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of a per-token loss ``[B, T]`` over the tokens where ``mask`` is 1 (all tokens if None)."""
    if mask is None:
        return loss.mean()
    m = mask.to(loss.dtype)
    return (loss * m).sum() / m.sum().clamp(min=1.0)
