"""Exact-answer accuracy of greedy generation (the new skill)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..data.examples import Example
from .scoring import autocast_ctx

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_answer(generated: str) -> str:
    """The first number in the first line of ``generated`` (commas dropped), or the stripped line."""
    line = generated.strip().split("\n", 1)[0] if generated.strip() else ""
    m = _NUMBER.search(line)
    return m.group(0).replace(",", "") if m else line.strip()


@dataclass(frozen=True)
class AccuracyResult:
    accuracy: float
    n: int
    outputs: list[str]  # the generated continuations, in input order


@torch.no_grad()
def greedy_generate(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int = 16,
                    bf16: bool = False, progress: bool = False) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches, the model's own ``generate``)."""
    from ..models.devices import input_device

    device = input_device(model)
    old_side = tok.padding_side
    tok.padding_side = "left"
    outs: list[str] = []
    try:
        for i in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress, leave=False):
            enc = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True)
            with autocast_ctx(bf16, device):
                gen = model.generate(input_ids=enc["input_ids"].to(device),
                                     attention_mask=enc["attention_mask"].to(device),
                                     max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]
            outs.extend(tok.batch_decode(new, skip_special_tokens=True))
    finally:
        tok.padding_side = old_side
    return outs


def task_accuracy(model, tok, examples: list[Example], max_new_tokens: int = 8, batch_size: int = 16,
                  bf16: bool = False, progress: bool = False) -> AccuracyResult:
    """Fraction of ``examples`` whose generated answer equals ``example.answer`` exactly."""
    model.eval()
    outs = greedy_generate(model, tok, [ex.prompt for ex in examples], max_new_tokens, batch_size, bf16, progress)
    correct = sum(extract_answer(o) == ex.answer for o, ex in zip(outs, examples))
    return AccuracyResult(correct / max(len(examples), 1), len(examples), outs)
