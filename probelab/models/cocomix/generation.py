"""Decoding for CoCoMix models, with or without a KV cache (both give the same tokens).

With the cache, each step feeds one new token: the lower blocks append one key/value, the
predictor makes that token's concept, and the upper blocks append two (the token slot and its
concept slot). Without it, every step reruns the whole sequence. ``tests/test_cocomix_generation.py``
checks that the two agree token for token.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

from ...errors import ProbelabError


def _pick(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None,
          generator: torch.Generator | None) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(-1)
    logits = logits.float() / max(temperature, 1e-6)
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, *,
             max_new_tokens: int = 20, do_sample: bool = False, temperature: float = 1.0,
             top_k: int | None = None, eos_token_id: int | None = None, pad_token_id: int | None = None,
             use_cache: bool = True, generator: torch.Generator | None = None) -> torch.LongTensor:
    """Extend ``input_ids [B, T]`` (left padding allowed) by up to ``max_new_tokens`` tokens.

    Rows that emit ``eos_token_id`` are then filled with ``pad_token_id`` (default: the EOS id).
    Returns ``[B, T + n]``.
    """
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ProbelabError("generate needs a non-empty [batch, tokens] prompt")
    if max_new_tokens < 0:
        raise ProbelabError(f"max_new_tokens must be >= 0 (got {max_new_tokens})")
    B = input_ids.shape[0]
    device = input_ids.device
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device).long()
    pad = eos_token_id if pad_token_id is None else pad_token_id
    ids = input_ids
    done = torch.zeros(B, dtype=torch.bool, device=device)
    cache = DynamicCache(config=model.config) if use_cache else None
    step_input = ids
    for _ in range(max_new_tokens):
        if use_cache:
            out = model(step_input, attention_mask=mask, cache=cache, use_cache=True)
        else:
            out = model(ids, attention_mask=mask)
        nxt = _pick(out.logits[:, -1], do_sample, temperature, top_k, generator)
        if eos_token_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            done = done | (nxt == eos_token_id)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], dim=1)
        step_input = nxt[:, None]
        if eos_token_id is not None and bool(done.all()):
            break
    return ids
