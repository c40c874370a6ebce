"""Per-token log-probabilities of right-padded batches (the one numeric primitive the evals share)."""
from __future__ import annotations

import contextlib

import torch


def autocast_ctx(enabled: bool, device: torch.device | str | None = None):
    """bf16 autocast for the device type of ``device`` (None: the CPU) when ``enabled``."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type if device is not None else "cpu", dtype=torch.bfloat16)


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


@torch.no_grad()
def next_token_logprobs(model, ids: torch.Tensor, mask: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """``out[b, t]`` = log p(ids[b, t+1] | ids[b, :t+1]), shape ``[B, T-1]``, fp32.

    Right padding keeps every real token at its natural position, so no position ids are needed;
    entries whose target is padding are garbage and must be masked by the caller.
    """
    from ..models.devices import input_device

    device = input_device(model)
    with autocast_ctx(bf16, device):
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, ids[:, 1:].to(logp.device).unsqueeze(-1)).squeeze(-1).cpu()
