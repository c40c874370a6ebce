"""``ExpansionConfig``: what a Control LLM expansion is, as data (saved in config.json's ``expansion``).

>>> cfg = ExpansionConfig(num_expanded=8).resolve(32)
>>> cfg.layers                      # split = 32 // 8 = 4; layer i expanded when (i + 1) % 4 == 0
[3, 7, 11, 15, 19, 23, 27, 31]
>>> ExpansionConfig.from_dict(cfg.to_dict()) == cfg
True
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from ...errors import ProbelabError

STRATEGY_NAMES = ("concat", "stack", "hybrid")
INTERPOLATOR_NAMES = ("lerp", "dlerp", "dlerpin", "plerp", "moe")
DIVERGENCE_NAMES = ("mse", "cosine", "none")
GATE_INIT_NAMES = ("zero", "random")
MOE_DIVERGENCE_NAMES = ("all", "routed")

# A preset fills every knob the caller left unset (None). ``probelab`` is this package's choice,
# ``official`` the defaults of the Control LLM authors' code (docs/control_llm.md has the table).
PRESETS: dict[str, dict] = {
    "probelab": {"freeze_interpolator": False, "gate_init": "zero", "moe_divergence": "all",
                 "detach_alpha": True},
    "official": {"freeze_interpolator": True, "gate_init": "random", "moe_divergence": "routed",
                 "detach_alpha": False},
}
PRESET_NAMES = tuple(PRESETS)
PRESET_KNOBS = tuple(PRESETS["probelab"])


class ExpansionError(ProbelabError):
    """An expansion that cannot be built (bad names, too many expanded layers, unsupported model)."""


def expanded_layer_indices(num_layers: int, num_expanded: int) -> list[int]:
    """The original blocks that get an expanded copy: split = L // N, block i when (i + 1) % split == 0.

    With L not a multiple of N this gives more than N candidates; the first N are kept
    (30 layers, N = 7: split 4 → 3, 7, ..., 27).
    """
    if not isinstance(num_expanded, int) or num_expanded < 1:
        raise ExpansionError(f"num_expanded must be a positive integer, got {num_expanded!r}")
    if num_expanded > num_layers:
        raise ExpansionError(f"cannot expand {num_expanded} layers: the model has only {num_layers} layers")
    split = num_layers // num_expanded
    return [i for i in range(num_layers) if (i + 1) % split == 0][:num_expanded]


@dataclass
class ExpansionConfig:
    """How to expand a pretrained decoder into a Control LLM.

    - ``strategy``: ``concat`` (a trainable copy beside each chosen block, merged by an interpolator),
      ``stack`` (LLaMA-Pro: a zero-output copy inserted after each chosen block) or ``hybrid``
      (alternate stack and concat over the chosen blocks, starting with stack).
    - ``interpolation``: how the two branches of a concat layer are merged (see ``interpolators.py``).
    - ``divergence``: ``mse`` | ``cosine`` | ``none``; ``alpha``: its weight, a number (0 turns it off)
      or ``"dynamic"`` (per-token weight = the interpolation weight; see ``detach_alpha``).
    - ``lerp_init``: initial logit f of the Lerp / Dlerp bias (w = sigmoid(f) = 0.5 at 0).
    - ``preset``: ``probelab`` (default) or ``official``; fills each of the four knobs below that
      is left as ``None``. A knob given explicitly wins over the preset.
    - ``freeze_interpolator``: keep the interpolation factor fixed: the Lerp / Plerp logit, the
      bias of the Dlerp / DlerpIn / MoE gates (their weights still train).
    - ``gate_init``: ``zero`` (gate weights 0, so every token starts at w = sigmoid(f)) or ``random``
      (torch's default ``nn.Linear`` init, bias = f; Plerp's lateral map = identity + 0.01·N(0, 1)).
    - ``moe_divergence``: ``all`` (every real token) or ``routed`` (only tokens the MoE gate sends to
      the expanded branch; with ``alpha="dynamic"`` weighted by the soft gate probability).
    - ``detach_alpha``: with ``alpha="dynamic"``, use the interpolation weight as a constant
      coefficient (True) or let the divergence's gradient reach the interpolator through it (False).
    - ``layers``: filled by :meth:`resolve` from the base model's layer count.
    """

    strategy: str = "concat"
    interpolation: str = "lerp"
    num_expanded: int = 8
    divergence: str = "mse"
    alpha: float | str = 1.0
    cosine_margin: float = 0.0
    lerp_init: float = 0.0
    preset: str = "probelab"
    freeze_interpolator: bool | None = None
    gate_init: str | None = None
    moe_divergence: str | None = None
    detach_alpha: bool | None = None
    base_model: str = ""
    num_base_layers: int | None = None
    layers: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ExpansionError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESET_NAMES)}")
        for knob, value in PRESETS[self.preset].items():
            if getattr(self, knob) is None:
                setattr(self, knob, value)
        self.validate()

    # ---- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        for name, value, allowed in (("strategy", self.strategy, STRATEGY_NAMES),
                                     ("interpolator", self.interpolation, INTERPOLATOR_NAMES),
                                     ("divergence", self.divergence, DIVERGENCE_NAMES),
                                     ("preset", self.preset, PRESET_NAMES),
                                     ("gate_init", self.gate_init, GATE_INIT_NAMES),
                                     ("moe_divergence", self.moe_divergence, MOE_DIVERGENCE_NAMES)):
            if value not in allowed:
                raise ExpansionError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        if isinstance(self.alpha, str):
            if self.alpha != "dynamic":
                try:
                    self.alpha = float(self.alpha)
                except ValueError:
                    raise ExpansionError(f"alpha must be a number or 'dynamic', got {self.alpha!r}") from None
        elif isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise ExpansionError(f"alpha must be a number or 'dynamic', got {self.alpha!r}")
        if not isinstance(self.alpha, str):
            self.alpha = float(self.alpha)
            if not math.isfinite(self.alpha) or self.alpha < 0:  # nan would pass a `< 0` test
                raise ExpansionError(f"alpha (--alpha) must be a finite number >= 0 or 'dynamic', got {self.alpha}")
        if not isinstance(self.num_expanded, int) or isinstance(self.num_expanded, bool) or self.num_expanded < 1:
            raise ExpansionError(f"num_expanded must be a positive integer, got {self.num_expanded!r}")
        for knob in ("freeze_interpolator", "detach_alpha"):
            if not isinstance(getattr(self, knob), bool):
                raise ExpansionError(f"{knob} must be true or false, got {getattr(self, knob)!r}")
        if not 0.0 <= self.cosine_margin < 2.0:
            raise ExpansionError(f"cosine_margin must be in [0, 2), got {self.cosine_margin}")
        if self.num_base_layers is not None:
            expected = expanded_layer_indices(self.num_base_layers, self.num_expanded)
            if self.layers and list(self.layers) != expected:
                raise ExpansionError(f"expansion layers {self.layers} do not match the rule for "
                                     f"{self.num_base_layers} layers, N={self.num_expanded}: {expected}")

    def resolve(self, num_base_layers: int) -> "ExpansionConfig":
        """Fill ``layers`` for a base model with ``num_base_layers`` blocks (raises if N is too large)."""
        self.num_base_layers = int(num_base_layers)
        self.layers = expanded_layer_indices(self.num_base_layers, self.num_expanded)
        return self

    @property
    def divergence_active(self) -> bool:
        return self.divergence != "none" and self.alpha != 0.0

    @property
    def name(self) -> str:
        """The paper's short name, e.g. ``Lerp8-MSE`` or ``Dlerp8`` (no divergence)."""
        head = {"concat": self.interpolation.capitalize(), "stack": "Stack", "hybrid": "Hybrid"}[self.strategy]
        tail = f"-{self.divergence.upper() if self.divergence == 'mse' else self.divergence.capitalize()}" \
            if self.divergence_active and self.strategy != "stack" else ""
        return f"{head}{self.num_expanded}{tail}"

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ExpansionConfig":
        if not isinstance(d, dict):
            raise ExpansionError(f"an expansion block must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ExpansionError(f"unknown expansion fields: {', '.join(unknown)}")
        return cls(**d)
