"""The ``cocomix`` block of a CoCoMix model's config.json.

A CoCoMix student is a standard Llama-family decoder plus a few numbers that say where concepts
enter and how many there are. They live in one dataclass, saved as the ``cocomix`` key of the HF
config (that key is also how ``probelab.load_model`` recognises the folder).

>>> cfg = CoCoMixConfig(insert_layer=2, n_concepts=512)
>>> CoCoMixConfig.from_dict(cfg.to_dict()) == cfg
True
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ...errors import ProbelabError

FORMAT_VERSION = 1


@dataclass
class CoCoMixConfig:
    """Where and how concepts are predicted and mixed.

    - ``insert_layer``: the concept predictor reads the residual stream after this many blocks
      (HF ``hidden_states[insert_layer]``), and blocks ``insert_layer`` onwards run on the interleaved
      sequence ``h_1, c_1, h_2, c_2, ...``. Default 3, as in the authors' 69M config (concepts
      predicted before block index 3 of 8; their 386M and 1.38B configs: 5 of 24).
    - ``n_concepts``: C, the SAE dictionary size of the teacher (the predictor's output width).
    - ``topk``: k, concepts kept (by raw logit) before compression into one vector (paper: 32).
    - ``k_attr``: concept labels per token from the teacher's attribution scores (paper: 4).
    - ``lam``: weight of the concept loss (paper: 0.1).
    - ``ln_eps``: epsilon of the parameter-free LayerNorm in front of the predictor.
    - ``teacher``: free-form provenance (teacher model, SAE id, hook, attribution variant).
    """

    insert_layer: int = 3
    n_concepts: int = 32768
    topk: int = 32
    k_attr: int = 4
    lam: float = 0.1
    ln_eps: float = 1e-5
    teacher: dict = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def validate(self, num_layers: int | None = None) -> "CoCoMixConfig":
        if self.n_concepts < 1:
            raise ProbelabError(f"cocomix: n_concepts must be >= 1 (got {self.n_concepts})")
        if not 1 <= self.topk <= self.n_concepts:
            raise ProbelabError(f"cocomix: topk must be in 1..n_concepts={self.n_concepts} (got {self.topk})")
        if not 1 <= self.k_attr <= self.n_concepts:
            raise ProbelabError(f"cocomix: k_attr must be in 1..n_concepts (got {self.k_attr})")
        if self.lam < 0:
            raise ProbelabError(f"cocomix: lam must be >= 0 (got {self.lam})")
        if num_layers is not None and not 1 <= self.insert_layer < num_layers:
            raise ProbelabError(
                f"cocomix: insert_layer must be in 1..{num_layers - 1} for a {num_layers}-layer model "
                f"(got {self.insert_layer})")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CoCoMixConfig":
        if not isinstance(d, dict):
            raise ProbelabError("cocomix: the config block must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ProbelabError(f"cocomix: unknown config key(s) {', '.join(unknown)}")
        if d.get("version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ProbelabError(f"cocomix: config version {d['version']} is newer than this probelab "
                                f"({FORMAT_VERSION}); upgrade probelab")
        return cls(**d)
