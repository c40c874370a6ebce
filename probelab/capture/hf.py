"""The default capture backend: batched forward passes of an HF model with hooks.

Padding safety: texts are batched with the tokenizer's padding side (left or right); the attention
mask hides padding and explicit ``position_ids`` (count of real tokens before each position) make a
left-padded text see exactly the positions it would see alone. Token selection reads only real
tokens, so every text's states equal those of an unpadded single-text forward pass.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..errors import CaptureError
from .container import Captures
from .recorder import Recorder, record

SELECTIONS = ("last", "mean", "all")


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (padding gets position 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _accepts(model, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _select(h: torch.Tensor, mask: torch.Tensor, skip_first: torch.Tensor, select: str):
    """Reduce ``h [B, T, d]`` to one state per text (``last``/``mean``) or ragged real tokens (``all``)."""
    mask = mask.bool()
    if select == "last":
        T = mask.shape[1]
        last = T - 1 - mask.flip(-1).long().argmax(-1)  # index of the last real token
        return h[torch.arange(h.shape[0]), last]
    if select == "mean":
        keep = mask.clone()
        first = mask.long().argmax(-1)  # index of the first real token
        rows = torch.nonzero(skip_first).flatten()
        keep[rows, first[rows]] = False
        # a text that is only BOS keeps its single token
        empty = keep.sum(-1) == 0
        keep[empty] = mask[empty]
        w = keep.to(h.dtype).unsqueeze(-1)
        return (h * w).sum(1) / w.sum(1)
    return [h[b, mask[b]] for b in range(h.shape[0])]


@torch.no_grad()
def capture_hf(model, tokenizer, texts: list[str], select: str = "last", batch_size: int = 32,
               max_length: int | None = None, progress: bool | None = None) -> Captures:
    if select not in SELECTIONS:
        raise CaptureError(f"unknown token selection {select!r}; choose one of {', '.join(SELECTIONS)}")
    texts = list(texts)
    if not texts:
        raise CaptureError("the text list is empty")
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        raise CaptureError("texts must be non-empty strings")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    bos = tokenizer.bos_token_id
    per_stream: dict[str, dict[int, list]] = {}
    tokens: list[list[str]] = []
    show = progress if progress is not None else len(texts) > 4 * batch_size
    for start in tqdm(range(0, len(texts), batch_size), desc="capture", disable=not show, unit="batch"):
        chunk = texts[start:start + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=max_length is not None,
                        max_length=max_length)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        for b in range(ids.shape[0]):
            tokens.append(tokenizer.convert_ids_to_tokens(ids[b][mask[b].bool()].tolist()))
        first_ids = ids.gather(1, mask.long().argmax(-1, keepdim=True)).squeeze(1)
        skip_first = (first_ids == bos) if bos is not None else torch.zeros_like(first_ids, dtype=torch.bool)
        rec = Recorder()
        extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}  # no full-vocab logits
        with record(model, rec):
            model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False,
                  **extra)
        for stream, by_layer in rec.data.items():
            dst = per_stream.setdefault(stream, {})
            for layer, h in by_layer.items():
                h = h.float()
                if h.dim() == 2:  # per-token scalars such as an interpolation weight
                    h = h.unsqueeze(-1)
                dst.setdefault(layer, []).append(_select(h, mask, skip_first, select))
    layers = {s: sorted(v) for s, v in per_stream.items()}
    states: dict = {}
    for s, by_layer in per_stream.items():
        if select == "all":
            per_text = [list(x) for x in zip(*[sum(by_layer[l], []) for l in layers[s]])]
            states[s] = [torch.stack(t) for t in per_text]
        else:
            states[s] = torch.stack([torch.cat(by_layer[l]) for l in layers[s]])
    meta = {"backend": "hf", "model": getattr(model.config, "_name_or_path", ""),
            "padding_side": tokenizer.padding_side}
    return Captures(texts, tokens, select, layers, states, meta)
