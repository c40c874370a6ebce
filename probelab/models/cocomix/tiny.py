"""A tiny random CoCoMix model (byte tokenizer vocab, d64) for tests and examples."""
from __future__ import annotations

import torch
from transformers import LlamaConfig

from ..tiny import _tiny_dims
from .config import CoCoMixConfig
from .model import CoCoMixForCausalLM


def tiny_llama_config(num_layers: int = 4, hidden: int = 64, **overrides) -> LlamaConfig:
    return LlamaConfig(**{**_tiny_dims(num_layers, hidden), "tie_word_embeddings": True, **overrides})


def tiny_cocomix(num_layers: int = 4, hidden: int = 64, n_concepts: int = 96, topk: int = 4,
                 insert_layer: int = 2, k_attr: int = 4, lam: float = 0.1, seed: int = 0,
                 attn_implementation: str = "sdpa") -> CoCoMixForCausalLM:
    """A random CoCoMix student (fp32, eval mode) over the byte tokenizer's 259 ids."""
    torch.manual_seed(seed)
    cfg = tiny_llama_config(num_layers, hidden)
    cfg._attn_implementation = attn_implementation
    cc = CoCoMixConfig(insert_layer=insert_layer, n_concepts=n_concepts, topk=topk, k_attr=k_attr, lam=lam)
    return CoCoMixForCausalLM.from_configs(cfg, cc).eval()
