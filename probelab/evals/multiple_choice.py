"""Log-likelihood multiple choice (MMLU-style), in two standard formats.

- ``letter``: the question and the four lettered options are shown; the prediction is whichever of
  " A", " B", " C", " D" the model finds most likely after "Answer:" (one forward per question).
- ``cloze``: only the question is shown; each option's text is scored as a continuation and the
  option with the highest log-likelihood per character wins (small models are usually above
  chance only in this format).
Chance level is 25% for four options; report it next to the number.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..data.mmlu import LETTERS, MCItem
from ..errors import ProbelabError
from .scoring import next_token_logprobs, right_pad

MC_CHANCE = 0.25


@dataclass(frozen=True)
class MCResult:
    accuracy: float
    n: int
    chance: float
    format: str
    predictions: list[int]


def letter_prompt(item: MCItem) -> str:
    opts = "\n".join(f"{L}. {c}" for L, c in zip(LETTERS, item.choices))
    return f"Question: {item.question}\n{opts}\nAnswer:"


def cloze_prompt(item: MCItem) -> str:
    return f"Question: {item.question}\nAnswer:"


def _letter_scores(model, tok, items, batch_size, bf16, progress) -> list[list[float]]:
    letter_ids = []
    for L in LETTERS:
        ids = tok(" " + L, add_special_tokens=False)["input_ids"]
        letter_ids.append(ids[-1])
    scores = []
    prompts = [tok(letter_prompt(it), add_special_tokens=True)["input_ids"] for it in items]
    for i in tqdm(range(0, len(prompts), batch_size), desc="mc letter", disable=not progress, leave=False):
        chunk = prompts[i : i + batch_size]
        ids, mask = right_pad(chunk, tok.pad_token_id or 0)
        from ..models.devices import input_device
        from .scoring import autocast_ctx

        device = input_device(model)
        with torch.no_grad(), autocast_ctx(bf16, device):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        last = (mask.sum(1) - 1).to(logits.device)
        final = logits[torch.arange(len(chunk), device=logits.device), last].float().log_softmax(-1).cpu()
        scores.extend(final[:, letter_ids].tolist())
    return scores


def _cloze_scores(model, tok, items, batch_size, bf16, progress) -> list[list[float]]:
    seqs, spans = [], []
    for it in items:
        p = tok(cloze_prompt(it), add_special_tokens=True)["input_ids"]
        for c in it.choices:
            cont = tok(" " + c, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
            seqs.append(p + cont)
            spans.append((len(p), len(p) + len(cont), max(len(c), 1)))
    flat = []
    for i in tqdm(range(0, len(seqs), batch_size), desc="mc cloze", disable=not progress, leave=False):
        ids, mask = right_pad(seqs[i : i + batch_size], tok.pad_token_id or 0)
        lp = next_token_logprobs(model, ids, mask, bf16)
        for j, (a, b, nchar) in enumerate(spans[i : i + batch_size]):
            flat.append(float(lp[j, a - 1 : b - 1].double().sum()) / nchar)
    k = len(LETTERS)
    return [flat[i * k : (i + 1) * k] for i in range(len(items))]


MC_FORMATS = {"letter": _letter_scores, "cloze": _cloze_scores}


def mc_accuracy(model, tok, items: list[MCItem], format: str = "cloze", batch_size: int = 8,
                bf16: bool = False, progress: bool = False) -> MCResult:
    """Accuracy of argmax log-likelihood choice over ``items``."""
    if format not in MC_FORMATS:
        raise ProbelabError(f"unknown multiple-choice format {format!r}; known: {', '.join(MC_FORMATS)}")
    if not items:
        raise ProbelabError("no multiple-choice items to evaluate")
    model.eval()
    scores = MC_FORMATS[format](model, tok, items, batch_size, bf16, progress)
    preds = [max(range(len(s)), key=s.__getitem__) for s in scores]
    acc = sum(p == it.label for p, it in zip(preds, items)) / len(items)
    return MCResult(acc, len(items), MC_CHANCE, format, preds)
