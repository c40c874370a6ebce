"""Capture backend through transformer-lens' ``TransformerBridge`` (TL hook names).

Layer 0 is ``blocks.0.hook_resid_pre`` and layer i+1 is ``blocks.{i}.hook_resid_post``: the same
indexing as the ``hf`` backend, which it agrees with (tested). Texts run one at a time, unpadded,
so no padding convention of the bridge can leak into the states. The bridge loads its own copy of
the weights from a local folder (the model's folder, or a temporary save of an in-memory model).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..errors import CaptureError
from . import register_backend
from .container import Captures
from .hf import SELECTIONS, STORE_DEVICE, STORE_DTYPE, _select


def tl_hook_names(n_layers: int) -> list[str]:
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]


def boot_bridge(model, tokenizer, device=None, dtype=None):
    """A TransformerBridge over the same weights as ``model`` (loaded from a local folder), on the
    model's input device and in its dtype unless ``device`` / ``dtype`` say otherwise."""
    from transformer_lens.model_bridge import TransformerBridge

    from ..models.devices import input_device, model_dtype

    device = str(device or input_device(model))
    dtype = dtype or model_dtype(model)
    folder = Path(str(getattr(model, "name_or_path", "") or ""))
    if folder.is_dir() and (folder / "config.json").is_file():
        return TransformerBridge.boot_transformers(str(folder), device=device, dtype=dtype)
    with tempfile.TemporaryDirectory(prefix="probelab-tl-") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        return TransformerBridge.boot_transformers(tmp, device=device, dtype=dtype)


@torch.no_grad()
def capture_tl(model, tokenizer, texts, select: str = "last", bridge=None, include_first: bool = False,
               batch_size: int | None = None, progress: bool | None = None, **unsupported) -> Captures:
    """The reference backend: one text at a time through TransformerBridge (``batch_size`` and
    ``progress`` are accepted and unused; options only the ``hf`` backend has are refused)."""
    given = sorted(k for k, v in unsupported.items() if v is not None)
    if given:
        raise CaptureError(f"the transformer-lens backend does not support {', '.join(given)}; use the hf backend")
    if select not in SELECTIONS:
        raise CaptureError(f"unknown token selection {select!r}; choose one of {', '.join(SELECTIONS)}")
    texts = list(texts)
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise CaptureError("texts must be a non-empty list of non-empty strings")
    bridge = bridge or boot_bridge(model, tokenizer)
    names = tl_hook_names(model.config.num_hidden_layers)
    per_layer: list[list] = [[] for _ in names]
    tokens = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        tokens.append(tokenizer.convert_ids_to_tokens(ids[0].tolist()))
        _, cache = bridge.run_with_cache(ids.to(bridge.cfg.device), names_filter=names)
        mask = torch.ones_like(ids)
        for i, name in enumerate(names):
            per_layer[i].append(_select(cache[name].to(STORE_DEVICE, STORE_DTYPE), mask, select, include_first))
    layers = list(range(len(names)))
    if select == "all":
        states = [torch.stack([per_layer[l][t][0] for l in layers]) for t in range(len(texts))]
    else:
        states = torch.stack([torch.cat(x) for x in per_layer])
    meta = {"backend": "transformer-lens", "hook_names": names}
    return Captures(texts, tokens, select, {"resid": layers}, {"resid": states}, meta)


register_backend("transformer-lens", capture_tl)
