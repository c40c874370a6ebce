"""Model sizes: CoCoMix's *active* parameters and the width-matched NTP baseline.

The paper compares CoCoMix with an NTP model whose width is increased until the active parameter
counts match (official configs: CoCoMix d512 vs NTP d624 at "69M"). Active parameters count every
weight used for a token, except that the compressor ``W_comp [d, C]`` is multiplied by a TopK-sparse
vector: only ``k`` of its ``C`` columns act, so it counts ``k * d``. Tied embeddings count once.
:func:`matched_ntp_config` searches the hidden size (keeping the head count, MLP ratio and depth) whose
plain Llama has the active-parameter count closest to a CoCoMix config's.
"""
from __future__ import annotations

import copy

from transformers import LlamaConfig

from .config import CoCoMixConfig


def llama_parameters(cfg: LlamaConfig) -> int:
    """Parameter count of a ``LlamaForCausalLM`` with this config (computed, nothing is built)."""
    d, f, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    q = d * cfg.num_attention_heads * hd
    kv = 2 * d * cfg.num_key_value_heads * hd
    o = cfg.num_attention_heads * hd * d
    bias = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * hd + d if cfg.attention_bias else 0
    block = q + kv + o + bias + 3 * d * f + 2 * d
    emb = V * d * (1 if cfg.tie_word_embeddings else 2)
    return L * block + emb + d


def cocomix_active_parameters(cfg: LlamaConfig, cc: CoCoMixConfig) -> int:
    """Backbone + predictor (``d*C + C + d``, dense) + the ``k`` active compressor columns (``k*d``)."""
    d = cfg.hidden_size
    return llama_parameters(cfg) + d * cc.n_concepts + cc.n_concepts + d + cc.topk * d


def cocomix_total_parameters(cfg: LlamaConfig, cc: CoCoMixConfig) -> int:
    d = cfg.hidden_size
    return llama_parameters(cfg) + d * cc.n_concepts + cc.n_concepts + d + cc.n_concepts * d


def matched_ntp_config(cfg: LlamaConfig, cc: CoCoMixConfig) -> LlamaConfig:
    """A wider plain Llama whose parameter count is closest to CoCoMix's active parameters.

    Hidden sizes are multiples of ``2 * num_attention_heads`` (even rotary head dims); the MLP keeps
    its ratio to the hidden size; depth, heads and vocab are unchanged.
    """
    target = cocomix_active_parameters(cfg, cc)
    ratio = cfg.intermediate_size / cfg.hidden_size
    step = 2 * cfg.num_attention_heads
    best, best_gap = None, None
    d = cfg.hidden_size
    while True:
        cand = _with_width(cfg, d, ratio)
        gap = abs(llama_parameters(cand) - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = cand, gap
        if llama_parameters(cand) > target:
            break
        d += step
    return best


def _with_width(cfg: LlamaConfig, d: int, ratio: float) -> LlamaConfig:
    new = copy.deepcopy(cfg)
    new.hidden_size = d
    new.intermediate_size = int(round(ratio * d))
    if getattr(new, "head_dim", None):
        new.head_dim = d // cfg.num_attention_heads
    if hasattr(new, "cocomix"):
        del new.cocomix
    return new
