"""A reduced student vocabulary: the most frequent token ids of the training set, plus one "other" id.

A small student on a 49k-id tokenizer is mostly embedding table (at d128, 6.3M of ~7M parameters), so a
comparison of students says little about their transformer bodies. ``ReducedVocab`` keeps the
``size - 1`` most frequent ids of the training blocks (new ids ``0 .. size-2``, most frequent first) and
maps every other id to ``size - 1``; both students (CoCoMix and the NTP baseline) see the same mapped
ids, and the teacher still labels the original ids at the same positions, so the concept labels are
unchanged. Perplexities are then over ``size`` classes (the "other" id is one of them): comparable
between the two students, not with a full-vocabulary model.

>>> blocks = torch.tensor([[5, 5, 7, 9], [5, 7, 7, 2]])
>>> v = ReducedVocab.from_blocks(blocks, size=3)
>>> v.kept.tolist(), v.encode(blocks).tolist()
([5, 7], [[0, 0, 1, 2], [0, 1, 1, 2]])
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ...errors import ProbelabError

FILE = "reduced_vocab.safetensors"


class ReducedVocab:
    def __init__(self, kept: torch.Tensor):
        self.kept = kept.to(torch.long)  # original id of each new id (the "other" id is not in it)
        if self.kept.numel() == 0 or self.kept.unique().numel() != self.kept.numel():
            raise ProbelabError("a reduced vocabulary needs distinct kept ids")
        self.table = torch.full((int(self.kept.max()) + 1,), self.other, dtype=torch.long)
        self.table[self.kept] = torch.arange(self.kept.numel())

    @property
    def size(self) -> int:
        return self.kept.numel() + 1

    @property
    def other(self) -> int:
        return self.kept.numel()

    @classmethod
    def from_blocks(cls, blocks: torch.Tensor, size: int, keep: tuple = ()) -> "ReducedVocab":
        """The ``size - 1`` most frequent ids of ``blocks`` (ties: the smaller id first); ids in ``keep``
        (special tokens such as EOS) are kept whatever their count."""
        if size < 2:
            raise ProbelabError(f"a reduced vocabulary needs at least 2 ids, got {size}")
        counts = torch.bincount(blocks.flatten().to(torch.long))
        forced = [int(i) for i in dict.fromkeys(keep) if i is not None]
        if len(forced) > size - 1:
            raise ProbelabError(f"vocabulary size {size} cannot hold the {len(forced)} special ids")
        order = torch.argsort(-counts.to(torch.float64) + torch.arange(counts.numel()) * 1e-12, stable=True)
        ranked = [int(i) for i in order if counts[i] > 0 and int(i) not in forced]
        return cls(torch.tensor(forced + ranked[: size - 1 - len(forced)], dtype=torch.long))

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Original ids -> reduced ids (unknown ids -> :attr:`other`)."""
        ids = ids.to(torch.long)
        inside = ids < self.table.numel()
        return torch.where(inside, self.table[ids.clamp(max=self.table.numel() - 1)], torch.full_like(ids, self.other))

    def map_id(self, token_id: int | None) -> int | None:
        """One special id mapped, or None when it is not kept."""
        if token_id is None:
            return None
        new = int(self.encode(torch.tensor([token_id]))[0])
        return None if new == self.other else new

    def coverage(self, blocks: torch.Tensor) -> float:
        """Fraction of the tokens in ``blocks`` that keep their own id."""
        return float((self.encode(blocks) != self.other).float().mean())

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / FILE
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({"kept_ids": self.kept.contiguous()}, str(tmp))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "ReducedVocab":
        path = Path(folder) / FILE
        if not path.is_file():
            raise ProbelabError(f"{path} not found: this run used the tokenizer's full vocabulary")
        return cls(load_file(str(path))["kept_ids"])
