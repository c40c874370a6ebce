"""``Captures``: hidden states of a list of texts, per stream and layer, with save/load.

A *stream* is one family of hidden states: ``resid`` is the residual stream (index 0 = the input
of the first block, index i = the output of block i-1, the HF ``hidden_states`` convention, but the
last index is the raw last block output, before the final norm). Models with two branches (Control
LLM) add streams such as ``pretrained``, ``expanded``, ``merged`` and ``weight`` at their merged
layers, all from the same forward pass.

Layout: for ``select`` = ``last`` or ``mean`` a stream is a tensor ``[n_layers, n_texts, d]``;
for ``all`` it is a sequence (one per text) of ``[n_layers, n_tokens_i, d]`` tensors (real tokens
only). States are float32 on the CPU whatever the model's device and dtype.

On disk: ``captures.json`` (texts, tokens, layers, and the list of shards) and the states in
safetensors shards, each holding a contiguous run of texts: ``states.safetensors`` when there is
one shard, ``states-00000.safetensors``, ``states-00001.safetensors``, ... when there are more.
A ragged capture loaded from a folder reads each text's tensor from its shard only when indexed
(:class:`ShardedStates`), so a corpus larger than memory can be captured
(``capture(..., out=DIR)``) and read back text by text.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import CaptureError, ProbelabError
from ..paths import atomic_dir

FORMAT_VERSION = 1
SHARD_BYTES = 256 * 2**20  # states per shard file before a new one is started


def shard_name(index: int, count: int) -> str:
    return "states.safetensors" if count == 1 else f"states-{index:05d}.safetensors"


class ShardWriter:
    """Writes states to safetensors shards as they come, holding at most about ``shard_bytes`` in memory.

    ``add(batch)`` takes ``{stream: tensor [L, B, d]}`` (``last``/``mean``) or ``{stream: [B tensors
    [L, T_i, d]]}`` (``all``) for the next ``B`` texts; :meth:`finish` writes the rest and returns the
    shard list for the header.
    """

    def __init__(self, folder: Path, ragged: bool, shard_bytes: int = SHARD_BYTES) -> None:
        self.folder, self.ragged, self.shard_bytes = Path(folder), ragged, shard_bytes
        self.pending: dict[str, list] = {}
        self.pending_bytes = 0
        self.start = 0  # first text of the pending shard
        self.count = 0  # texts added so far
        self.shards: list[dict] = []

    def add(self, batch: dict, n_texts: int) -> None:
        for stream, value in batch.items():
            self.pending.setdefault(stream, []).append(value)
            parts = value if self.ragged else [value]
            self.pending_bytes += sum(t.numel() * t.element_size() for t in parts)
        self.count += n_texts
        if self.pending_bytes >= self.shard_bytes:
            self._flush()

    def _flush(self) -> None:
        if self.count == self.start:
            return
        tensors: dict[str, torch.Tensor] = {}
        for stream, chunks in self.pending.items():
            if self.ragged:
                for i, t in enumerate(t for chunk in chunks for t in chunk):
                    tensors[f"{stream}/{self.start + i}"] = t.contiguous()
            else:
                tensors[stream] = torch.cat(chunks, dim=1).contiguous()
        name = f"states-{len(self.shards):05d}.safetensors"
        save_file(tensors, str(self.folder / name))
        self.shards.append({"file": name, "start": self.start, "stop": self.count})
        self.pending, self.pending_bytes, self.start = {}, 0, self.count

    def finish(self) -> list[dict]:
        self._flush()
        if len(self.shards) == 1:  # one shard: the plain single-file layout
            (self.folder / self.shards[0]["file"]).rename(self.folder / shard_name(0, 1))
            self.shards[0]["file"] = shard_name(0, 1)
        return self.shards


class ShardedStates(Sequence):
    """One ragged stream of a capture folder: ``states[i]`` reads text ``i``'s ``[L, T_i, d]`` from its shard."""

    def __init__(self, folder: Path, stream: str, shards: list[dict]) -> None:
        self.folder, self.stream, self.shards = Path(folder), stream, shards
        self._handles: dict[str, object] = {}

    def __len__(self) -> int:
        return self.shards[-1]["stop"] if self.shards else 0

    def _shard(self, i: int) -> dict:
        for sh in self.shards:
            if sh["start"] <= i < sh["stop"]:
                return sh
        raise IndexError(i)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"text index {i} out of range for {n} texts")
        name = self._shard(i)["file"]
        if name not in self._handles:
            self._handles[name] = safe_open(str(self.folder / name), framework="pt")
        return self._handles[name].get_tensor(f"{self.stream}/{i}")

    def __repr__(self) -> str:
        return f"ShardedStates({self.stream!r}, {len(self)} texts in {len(self.shards)} shard(s) of {self.folder})"


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

    def tl(self, name: str, stream: str = "resid"):
        """States under a TransformerLens hook name, e.g. ``blocks.3.hook_resid_post`` (:mod:`.tl_names`)."""
        from .tl_names import read_tl

        return read_tl(self, name, stream)

    def to_tl_cache(self, stream: str = "resid", text: int | None = None) -> dict:
        """``{TL hook name: tensor}`` shaped like TransformerLens' ``ActivationCache`` (:mod:`.tl_names`)."""
        from .tl_names import to_tl_cache

        return to_tl_cache(self, stream=stream, text=text)

    # ---- persistence -------------------------------------------------------------------------
    def header(self, shards: list[dict]) -> dict:
        return {
            "format": "probelab.captures", "version": FORMAT_VERSION, "texts": self.texts,
            "tokens": self.tokens, "select": self.select, "layers": self.layers, "meta": self.meta,
            "shards": shards,
        }

    def save(self, folder: str | Path, overwrite: bool = False, shard_bytes: int = SHARD_BYTES) -> Path:
        """Write ``captures.json`` + the states (one or more safetensors shards) atomically into ``folder``
        (:func:`probelab.paths.atomic_dir`: ``overwrite`` replaces a folder probelab did not write)."""
        n = len(self.texts)
        with atomic_dir(folder, overwrite=overwrite, kind="captures") as tmp:
            writer = ShardWriter(tmp, self.ragged, shard_bytes)
            step = 64
            for a in range(0, n, step):
                b = min(n, a + step)
                if self.ragged:
                    batch = {s: [v[i] for i in range(a, b)] for s, v in self.states.items()}
                else:
                    batch = {s: v[:, a:b] for s, v in self.states.items()}
                writer.add(batch, b - a)
            (tmp / "captures.json").write_text(json.dumps(self.header(writer.finish()), indent=1))
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> "Captures":
        """Read a capture folder; a ragged (``all``) capture reads each text's states lazily."""
        folder = Path(folder)
        head_file = folder / "captures.json"
        if not head_file.is_file():
            raise ProbelabError(f"{folder} is not a probelab capture folder (no captures.json)")
        try:
            head = json.loads(head_file.read_text())
        except Exception as e:
            raise ProbelabError(f"cannot read captures in {folder}: {str(e).splitlines()[0]}") from None
        if not isinstance(head, dict) or head.get("format") != "probelab.captures":
            raise ProbelabError(f"{head_file} is not a probelab captures header")
        n = len(head["texts"])
        shards = head.get("shards") or [{"file": "states.safetensors", "start": 0, "stop": n}]
        missing = [sh["file"] for sh in shards if not (folder / sh["file"]).is_file()]
        if missing:
            raise ProbelabError(f"{folder} is missing its states file(s): {', '.join(missing[:3])}")
        if shards[0]["start"] != 0 or shards[-1]["stop"] != n or any(
                a["stop"] != b["start"] for a, b in zip(shards, shards[1:])):
            raise ProbelabError(f"{head_file}: the shards do not cover the {n} texts")
        states: dict = {}
        try:
            if head["select"] == "all":
                for name in head["layers"]:
                    states[name] = ShardedStates(folder, name, shards)
                    if n:
                        states[name][n - 1]  # the last text is there (and the file is readable)
            else:
                parts = [load_file(str(folder / sh["file"])) for sh in shards]
                for name in head["layers"]:
                    states[name] = torch.cat([p[name] for p in parts], dim=1)
        except ProbelabError:
            raise
        except Exception as e:
            raise ProbelabError(f"cannot read captures in {folder}: {str(e).splitlines()[0]}") from None
        return cls(head["texts"], head["tokens"], head["select"], head["layers"], states, head.get("meta", {}))
