"""Teacher concept labels for CoCoMix training, computed once and cached on disk.

The teacher (a frozen LM + SAE) costs far more per token than a small student: one forward pass of
the whole teacher plus a backward pass from the loss down to the SAE site (on this CPU, SmolLM2-135M
with its SAE labels ~350 tokens/s in bf16, while the 8M-parameter CPU student trains at ~1,100:
labelling on the fly would make every step ~4x slower; see training/results/cocomix.md). So the
training script labels its fixed token blocks once, in shards, and every run (CoCoMix variants,
resumed runs) reads them back. The alternative, labelling each batch on the fly (``labels:
on_the_fly`` in the training config), is what the paper does on GPUs with an unbounded data stream.

Cache layout: ``<folder>/meta.json`` (what produced the labels, a hash of the tokens) and
``shard-00000.safetensors``... each holding ``labels [n, T, k_attr]`` (int32, the top latents by
attribution) for consecutive blocks and, when the labeler offers ``label_sets`` (a
:class:`~probelab.sae.ConceptLabeler` does), ``activation`` (the top latents by SAE activation, from
the same teacher pass: the paper's Fig. 6a ablation costs no second pass). Shards are written
atomically, so an interrupted run resumes at the first missing shard.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ...errors import ProbelabError
from ...paths import atomic_write_text


def tokens_digest(blocks: torch.Tensor) -> str:
    """A short hash of the token blocks (labels are only valid for exactly these tokens)."""
    return hashlib.sha256(blocks.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]


SHARD_KEYS = {"attribution": "labels", "activation": "activation"}  # label selection -> tensor name in a shard


def label_blocks(labeler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], blocks: torch.Tensor,
                 folder: str | Path, provenance: dict, shard_size: int = 64, batch_size: int = 8,
                 device: str | torch.device | None = None, progress: bool = True,
                 select: str = "attribution") -> torch.Tensor:
    """Labels ``[N, T, k_attr]`` for ``blocks [N, T]``, computed with ``labeler`` or read from ``folder``.

    ``select``: ``attribution`` (the labeler's own output) or ``activation`` (needs a labeler with
    ``label_sets``, or a cache whose shards hold that set).

    ``provenance`` (teacher, SAE, variant, k_attr...) is stored beside the labels; a cache whose
    provenance or token hash differs is refused rather than silently reused. ``device``: where the
    token ids are sent (None: left to ``labeler``; a :class:`~probelab.sae.ConceptLabeler` sends them
    to its teacher's embedding device).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"provenance": provenance, "tokens": tokens_digest(blocks), "shape": list(blocks.shape),
            "shard_size": shard_size}
    meta_file = folder / "meta.json"
    if meta_file.is_file():
        old = json.loads(meta_file.read_text())
        if old != meta:
            raise ProbelabError(f"label cache {folder} was made for other tokens or another teacher; "
                                "delete it or choose another folder")
    else:
        atomic_write_text(meta_file, json.dumps(meta, indent=1))
    if select not in SHARD_KEYS:
        raise ProbelabError(f"unknown label selection {select!r}; choose one of {', '.join(SHARD_KEYS)}")
    key = SHARD_KEYS[select]
    shards = []
    starts = range(0, blocks.shape[0], shard_size)
    if (select != "attribution" and not hasattr(labeler, "label_sets")
            and any(not (folder / f"shard-{n:05d}.safetensors").is_file() for n in range(len(starts)))):
        raise ProbelabError(f"this labeler gives no {select} labels (it has no label_sets)")  # before any work
    for n, start in enumerate(tqdm(starts, desc="teacher labels", unit="shard", disable=not progress)):
        path = folder / f"shard-{n:05d}.safetensors"
        if path.is_file():
            stored = load_file(str(path))
            if key not in stored:
                raise ProbelabError(f"label cache {folder} holds no {select} labels (made by a labeler without "
                                    "label_sets); delete it to relabel")
            shards.append(stored[key])
            continue
        part = blocks[start:start + shard_size]
        outs: dict[str, list[torch.Tensor]] = {}
        for i in range(0, part.shape[0], batch_size):
            ids = part[i:i + batch_size] if device is None else part[i:i + batch_size].to(device)
            mask = torch.ones_like(ids)
            sets = labeler.label_sets(ids, mask) if hasattr(labeler, "label_sets") else {"attribution": labeler(ids, mask)}
            for name, labels in sets.items():
                outs.setdefault(SHARD_KEYS[name], []).append(labels.to(torch.int32).cpu())
        if key not in outs:  # a label_sets without this selection
            raise ProbelabError(f"this labeler gives no {select} labels")
        tensors = {name: torch.cat(parts).contiguous() for name, parts in outs.items()}
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp))
        tmp.replace(path)
        shards.append(tensors[key])
    return torch.cat(shards)
