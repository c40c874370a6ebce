"""Save and load CoCoMix models as ordinary HF folders (config.json + model.safetensors + tokenizer).

config.json is a ``LlamaConfig`` with one extra key, ``cocomix``, and ``model_type: cocomix`` (folders
saved before say ``llama`` and load the same way); ``probelab.load_model(folder)`` routes folders with
that key here, and ``AutoModelForCausalLM`` loads them once probelab is imported. Weights are safetensors only; no remote code is involved.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ...errors import ProbelabError
from ..loading import save_hf_folder
from .model import CoCoMixForCausalLM


def save_cocomix(model: CoCoMixForCausalLM, folder: str | Path, tokenizer=None) -> Path:
    """Write ``model`` (and ``tokenizer``) to ``folder`` atomically."""
    if not isinstance(model, CoCoMixForCausalLM):
        raise ProbelabError(f"save_cocomix expects a CoCoMix model, got {type(model).__name__}")
    model.config.cocomix = model.cocomix.to_dict()
    return save_hf_folder(model, folder, tokenizer)


def load_cocomix(folder: str | Path, dtype: torch.dtype = torch.float32) -> CoCoMixForCausalLM:
    """Load a folder written by :func:`save_cocomix` (the model only; ``load_model`` adds the tokenizer)."""
    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    if "cocomix" not in cfg:
        raise ProbelabError(f"{folder} is not a CoCoMix model (no 'cocomix' block in config.json)")
    model = CoCoMixForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True)
    return model.eval()
