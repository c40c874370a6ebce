"""``ControlLayer``: a frozen pretrained block and its trainable copy, run side by side and merged.

It replaces the block's entry in the decoder's ``ModuleList``, so the HF model's own forward loop
calls it with exactly the arguments it gives every block (hidden states, mask, positions, rotary
embeddings, cache). Both branches receive the same input; the expanded branch's attention has its
own ``layer_idx`` (L' + j), so it keeps its own KV cache entries. The layer returns the merged
output in the block's own output format (a tensor, or a tuple whose first item is replaced).

Per-forward bookkeeping (padding mask, divergence terms, an attached recorder) lives in a
:class:`ControlState` shared by all layers of one model.
"""
from __future__ import annotations

import torch
from torch import nn

from .divergence import Divergence, masked_token_mean


class ControlState:
    """What the layers of one model share during a forward pass (not a module: no parameters)."""

    def __init__(self, divergence: Divergence, alpha: float | str, *, detach_alpha: bool = True,
                 moe_divergence: str = "all") -> None:
        self.divergence = divergence
        self.alpha = alpha
        self.detach_alpha = detach_alpha
        self.moe_divergence = moe_divergence  # "routed": MoE layers penalise only tokens sent to the expanded branch
        self.mask: torch.Tensor | None = None  # [B, S] padding mask of the current call (1 = real token)
        self.terms: list[torch.Tensor] = []     # one alpha-weighted divergence per merged layer
        self.recorder = None

    def begin(self, attention_mask) -> None:
        self.mask = attention_mask if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2 else None
        self.terms = []

    def token_mask(self, num_tokens: int) -> torch.Tensor | None:
        """Mask of the ``num_tokens`` tokens being processed (the last columns when a cache holds the rest)."""
        return None if self.mask is None else self.mask[:, -num_tokens:]

    @property
    def active(self) -> bool:
        return self.divergence.active and self.alpha != 0.0

    def add_divergence(self, h_pre, h_exp, weight, routed_probability=None) -> None:
        """Record one merged layer's alpha-weighted divergence.

        ``routed_probability`` (MoE with ``moe_divergence="routed"``): the soft gate probability of the
        expanded branch ``[B, T, 1]``; then ``weight`` is the 0/1 routing, tokens kept on the pretrained
        branch add 0, and a dynamic alpha is the soft probability (the mean still runs over all real
        tokens, as in the official code).
        """
        per_token = self.divergence.per_token(h_pre, h_exp)  # [B, T]
        if routed_probability is not None:
            per_token = per_token * _per_token(weight.detach().float())
            weight = routed_probability
        if self.alpha == "dynamic":  # alpha = the interpolation weight, used as a coefficient
            w = weight.float()
            per_token = per_token * _per_token(w.detach() if self.detach_alpha else w)
        else:
            per_token = per_token * self.alpha
        self.terms.append(masked_token_mean(per_token, self.token_mask(per_token.shape[1])))

    def divergence_loss(self, device) -> torch.Tensor:
        """Mean over merged layers of the alpha-weighted divergence (0 when off or no merged layer)."""
        if not self.terms:
            return torch.zeros((), device=device)
        return torch.stack(self.terms).mean()


def _per_token(w: torch.Tensor) -> torch.Tensor:
    return w.squeeze(-1) if w.dim() == 3 else w


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _with_first(out, value):
    if isinstance(out, tuple):
        return (value,) + out[1:]
    if isinstance(out, list):
        return [value] + out[1:]
    return value


class ControlLayer(nn.Module):
    """Pretrained block (frozen) ‖ expanded block (trainable copy) → interpolator → merged output.

    ``index`` is the layer's position in the decoder block list: its streams are recorded at
    layer ``index + 1`` (the ``resid`` convention: the output of block i is layer i + 1).
    """

    def __init__(self, pretrained: nn.Module, expanded: nn.Module, interpolator: nn.Module, index: int,
                 state: ControlState) -> None:
        super().__init__()
        self.pretrained = pretrained
        self.expanded = expanded
        self.interpolator = interpolator
        self.index = index
        self._state = state
        if hasattr(pretrained, "attention_type"):  # some HF models read this off each block
            self.attention_type = pretrained.attention_type

    def forward(self, hidden_states, *args, **kwargs):
        out_pre = self.pretrained(hidden_states, *args, **kwargs)
        out_exp = self.expanded(hidden_states, *args, **kwargs)
        h_pre, h_exp = _first(out_pre), _first(out_exp)
        merged, weight = self.interpolator(hidden_states, h_pre, h_exp)
        state = self._state
        if state.active:
            routed = None
            if state.moe_divergence == "routed" and hasattr(self.interpolator, "expanded_probability"):
                routed = self.interpolator.expanded_probability(hidden_states)
            state.add_divergence(h_pre, h_exp, weight, routed)
        if state.recorder is not None:
            B, T = merged.shape[:2]
            w = weight.squeeze(-1) if weight.dim() == 3 else weight
            layer = self.index + 1
            state.recorder.put("pretrained", layer, h_pre)
            state.recorder.put("expanded", layer, h_exp)
            state.recorder.put("merged", layer, merged)
            state.recorder.put("weight", layer, w.expand(B, T))
        return _with_first(out_pre, merged)

    def extra_repr(self) -> str:
        return f"index={self.index}, interpolator={type(self.interpolator).__name__}"
