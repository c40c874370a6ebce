"""Perplexity on held-out text (retention of general language modelling)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .scoring import next_token_logprobs, right_pad


@dataclass(frozen=True)
class PerplexityResult:
    value: float  # exp(mean negative log-likelihood per predicted token)
    nll: float  # mean NLL per token (nats)
    tokens: int  # predicted tokens counted
    texts: int


def perplexity(model, tok, texts: list[str], max_len: int = 256, batch_size: int = 8,
               bf16: bool = False, progress: bool = False) -> PerplexityResult:
    """Token-level perplexity of ``texts``, each truncated to ``max_len`` tokens.

    Every token after the first is predicted once; pooling is over tokens (not texts), so long
    texts weigh more, as in standard LM evaluation.
    """
    seqs = [tok(t, add_special_tokens=True)["input_ids"][:max_len] for t in texts]
    seqs = [s for s in seqs if len(s) >= 2]
    total, count = 0.0, 0
    model.eval()
    for i in tqdm(range(0, len(seqs), batch_size), desc="perplexity", disable=not progress, leave=False):
        ids, mask = right_pad(seqs[i : i + batch_size], tok.pad_token_id or 0)
        lp = next_token_logprobs(model, ids, mask, bf16)
        valid = mask[:, 1:].bool()
        total += float(-(lp[valid]).double().sum())
        count += int(valid.sum())
    nll = total / max(count, 1)
    return PerplexityResult(math.exp(nll), nll, count, len(seqs))
