"""Interpolators: merge the pretrained and expanded branch outputs of a concat layer.

Every interpolator maps ``(h_in, h_pre, h_exp)`` (block input and the two branch outputs,
``[B, T, d]``) to ``(merged [B, T, d], weight)``, where ``weight`` is the weight of the expanded
branch, ``[B, T, 1]`` per token or a 0-d tensor (Lerp). At initialisation h_pre == h_exp, so every
interpolator below returns exactly h_pre: the expanded model equals the base model. That holds for
random gates too (``gate_init="random"``: w varies per token, but it weighs two equal tensors);
the one exception is Plerp with a random init, whose lateral map starts at identity + noise.

``freezable`` names the parameters ``freeze_interpolator`` keeps fixed (the interpolation factor).

Adding an interpolator is adding one class decorated with ``@register_interpolator("name")``
(and its name to ``config.INTERPOLATOR_NAMES``).
"""
from __future__ import annotations

import torch
from torch import nn

from .config import ExpansionConfig

INTERPOLATORS: dict[str, type["Interpolator"]] = {}


def register_interpolator(name: str):
    def deco(cls):
        INTERPOLATORS[name] = cls
        cls.kind = name
        return cls
    return deco


def build_interpolator(cfg: ExpansionConfig, hidden_size: int) -> "Interpolator":
    return INTERPOLATORS[cfg.interpolation](hidden_size, cfg)


class Interpolator(nn.Module):
    kind = ""
    freezable: tuple[str, ...] = ()

    def __init__(self, hidden_size: int, cfg: ExpansionConfig) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.init_logit = float(cfg.lerp_init)
        self.gate_init = cfg.gate_init

    def reset_parameters(self) -> None:
        """The identity-preserving initialisation (also re-applied by HF weight initialisation)."""

    def forward(self, h_in, h_pre, h_exp) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def blend(h_pre, h_exp, w):
        """(1 - w)·h_pre + w·h_exp, written as h_pre + w·(h_exp - h_pre) so equal branches give h_pre exactly."""
        return h_pre + w * (h_exp - h_pre)


@register_interpolator("lerp")
class Lerp(Interpolator):
    """One learned scalar per layer: w = sigmoid(f), f initialised to ``lerp_init`` (0 → w = 0.5)."""

    freezable = ("logit",)

    def __init__(self, hidden_size, cfg):
        super().__init__(hidden_size, cfg)
        self.logit = nn.Parameter(torch.zeros(()), requires_grad=not cfg.freeze_interpolator)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        self.logit.fill_(self.init_logit)

    def forward(self, h_in, h_pre, h_exp):
        w = torch.sigmoid(self.logit).to(h_pre.dtype)
        return self.blend(h_pre, h_exp, w), w


class PerTokenLerp(Interpolator):
    """A per-token weight w = sigmoid(gate(x)), gate a Linear(in_factor·d → 1) with bias f at init and weight 0
    (``gate_init="zero"``: w = sigmoid(f) everywhere at step 0) or torch's random Linear init (``"random"``).
    Subclasses say what the gate reads: :meth:`gate_input`."""

    in_factor = 1  # the gate reads in_factor·d features
    freezable = ("gate.bias",)

    def __init__(self, hidden_size, cfg):
        super().__init__(hidden_size, cfg)
        self.gate = nn.Linear(self.in_factor * hidden_size, 1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        if self.gate_init == "random":
            nn.Linear.reset_parameters(self.gate)
        else:
            self.gate.weight.zero_()
        self.gate.bias.fill_(self.init_logit)

    def gate_input(self, h_in, h_pre, h_exp) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, h_in, h_pre, h_exp):
        w = torch.sigmoid(self.gate(self.gate_input(h_in, h_pre, h_exp)))
        return self.blend(h_pre, h_exp, w), w


@register_interpolator("dlerp")
class Dlerp(PerTokenLerp):
    """Per-token weight from both branch outputs: w = sigmoid(Linear(2d → 1)([h_pre; h_exp])), bias = f."""

    in_factor = 2

    def gate_input(self, h_in, h_pre, h_exp):
        return torch.cat([h_pre, h_exp], dim=-1)


@register_interpolator("dlerpin")
class DlerpIn(PerTokenLerp):
    """Per-token weight from the block input: w = sigmoid(Linear(d → 1)(h_in)), bias = f."""

    def gate_input(self, h_in, h_pre, h_exp):
        return h_in


@register_interpolator("plerp")
class Plerp(Interpolator):
    """Progressive Lerp: (1 - w)·Lateral(h_pre) + w·h_exp, Lateral a d×d linear initialised to identity.

    The lateral map lets the pretrained features be re-mixed before merging (the official code's
    "prog" connection); identity init keeps the expanded model equal to the base at step 0.
    With ``gate_init="random"`` the lateral map starts at identity + 0.01·N(0, 1), as in the official
    code: the expanded model then differs from the base at step 0.
    """

    freezable = ("logit",)

    def __init__(self, hidden_size, cfg):
        super().__init__(hidden_size, cfg)
        self.logit = nn.Parameter(torch.zeros(()), requires_grad=not cfg.freeze_interpolator)
        self.lateral = nn.Linear(hidden_size, hidden_size, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        self.logit.fill_(self.init_logit)
        eye = torch.eye(self.hidden_size)
        if self.gate_init == "random":
            eye += 0.01 * torch.randn(self.hidden_size, self.hidden_size)
        self.lateral.weight.copy_(eye)

    def forward(self, h_in, h_pre, h_exp):
        w = torch.sigmoid(self.logit).to(h_pre.dtype)
        return self.blend(self.lateral(h_pre), h_exp, w), w


@register_interpolator("moe")
class MoE(Interpolator):
    """Top-1 routing per token between the two branches, switch-transformer style.

    gate: Linear(d → 2) on the block input, p = softmax. Each token takes the branch with the
    larger probability, scaled by p / p.detach(): the forward value is the chosen branch output
    unchanged (so the base model is reproduced exactly at init) while the gradient reaches the gate
    through p. **Difference from the official code:** it gathers the chosen branch with a hard
    argmax, so the LM loss never trains the gate; here the gate learns from the LM loss.
    Init: bias (0, f) with f = ``lerp_init``; weight 0 (``gate_init="zero"``: ties, so every token
    starts on the pretrained branch) or torch's random Linear init (``"random"``: tokens split between
    the branches from step 0; both branches are equal then, so the output is still the base's).
    The reported weight is 1.0 where the expanded branch is chosen, else 0.0;
    :meth:`expanded_probability` gives the soft gate probability of the expanded branch.
    """

    freezable = ("gate.bias",)

    def __init__(self, hidden_size, cfg):
        super().__init__(hidden_size, cfg)
        self.gate = nn.Linear(hidden_size, 2)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        if self.gate_init == "random":
            nn.Linear.reset_parameters(self.gate)
        else:
            self.gate.weight.zero_()
        self.gate.bias.copy_(torch.tensor([0.0, self.init_logit]))

    def probabilities(self, h_in) -> torch.Tensor:
        """Softmax gate probabilities ``[B, T, 2]`` (float32): (pretrained, expanded)."""
        return torch.softmax(self.gate(h_in).float(), dim=-1)

    def expanded_probability(self, h_in) -> torch.Tensor:
        """The soft gate probability of the expanded branch, ``[B, T, 1]``."""
        return self.probabilities(h_in)[..., 1:2]

    def forward(self, h_in, h_pre, h_exp):
        p = self.probabilities(h_in)
        choose_exp = (p[..., 1] > p[..., 0]).unsqueeze(-1)
        p_chosen = torch.where(choose_exp, p[..., 1:2], p[..., 0:1])
        scale = (p_chosen / p_chosen.detach()).to(h_pre.dtype)  # == 1 in value, carries the gate gradient
        merged = torch.where(choose_exp, h_exp, h_pre) * scale
        return merged, choose_exp.to(h_pre.dtype)
