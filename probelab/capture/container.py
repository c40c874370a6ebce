"""``Captures``: hidden states of a list of texts, per stream and layer, with save/load.

A *stream* is one family of hidden states: ``resid`` is the residual stream (index 0 = the input
of the first block, index i = the output of block i-1, the HF ``hidden_states`` convention, but the
last index is the raw last block output, before the final norm). Models with two branches (Control
LLM) add streams such as ``pretrained``, ``expanded``, ``merged`` and ``weight`` at their merged
layers, all from the same forward pass.

Layout: for ``select`` = ``last`` or ``mean`` a stream is a tensor ``[n_layers, n_texts, d]``;
for ``all`` it is a list (one per text) of ``[n_layers, n_tokens_i, d]`` tensors (real tokens only).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import CaptureError, ProbelabError
from ..paths import atomic_dir

FORMAT_VERSION = 1


@dataclass
class Captures:
    texts: list[str]
    tokens: list[list[str]]
    select: str
    layers: dict[str, list[int]]
    states: dict[str, torch.Tensor | list[torch.Tensor]]
    meta: dict = field(default_factory=dict)

    @property
    def streams(self) -> list[str]:
        return list(self.states)

    @property
    def ragged(self) -> bool:
        return self.select == "all"

    def stream(self, name: str = "resid"):
        if name not in self.states:
            raise CaptureError(f"no stream {name!r}; available: {', '.join(self.states)}")
        return self.states[name]

    def layer(self, layer: int, stream: str = "resid") -> torch.Tensor:
        """States of every text at one layer: ``[n_texts, d]`` (``last``/``mean``)."""
        if self.ragged:
            raise CaptureError("layer() needs select='last' or 'mean'; use stream() for ragged captures")
        layers = self.layers[stream]
        if layer not in layers:
            raise CaptureError(f"stream {stream!r} has no layer {layer}; layers: {layers}")
        return self.states[stream][layers.index(layer)]

    # ---- persistence -------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``captures.json`` + ``states.safetensors`` atomically into ``folder``."""
        tensors: dict[str, torch.Tensor] = {}
        for name, value in self.states.items():
            if self.ragged:
                for i, t in enumerate(value):
                    tensors[f"{name}/{i}"] = t.contiguous()
            else:
                tensors[name] = value.contiguous()
        header = {
            "format": "probelab.captures", "version": FORMAT_VERSION, "texts": self.texts,
            "tokens": self.tokens, "select": self.select, "layers": self.layers, "meta": self.meta,
        }
        with atomic_dir(folder) as tmp:
            save_file(tensors, str(tmp / "states.safetensors"))
            (tmp / "captures.json").write_text(json.dumps(header, indent=1))
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> "Captures":
        folder = Path(folder)
        head_file, st_file = folder / "captures.json", folder / "states.safetensors"
        if not head_file.is_file() or not st_file.is_file():
            raise ProbelabError(f"{folder} is not a probelab capture folder (captures.json + states.safetensors)")
        try:
            head = json.loads(head_file.read_text())
            tensors = load_file(str(st_file))
        except Exception as e:
            raise ProbelabError(f"cannot read captures in {folder}: {str(e).splitlines()[0]}") from None
        if head.get("format") != "probelab.captures":
            raise ProbelabError(f"{head_file} is not a probelab captures header")
        states: dict = {}
        for name in head["layers"]:
            if head["select"] == "all":
                states[name] = [tensors[f"{name}/{i}"] for i in range(len(head["texts"]))]
            else:
                states[name] = tensors[name]
        return cls(head["texts"], head["tokens"], head["select"], head["layers"], states, head.get("meta", {}))
