"""Turn :class:`Example` objects into token ids and padded batches for causal-LM training.

SFT examples are trained on the response only (prompt tokens get label -100); plain text
(empty prompt) is trained on every token (continual pretraining). Batches are right-padded and
padded positions get label -100, so they never count in the loss.
"""
from __future__ import annotations

import torch

from .examples import Example

IGNORE = -100


def encode(tok, ex: Example, max_len: int, add_eos: bool = True, chat: bool = False) -> dict[str, list[int]]:
    """Token ids and labels of one example, truncated to ``max_len`` tokens.

    With ``chat=True`` the prompt is wrapped in the tokenizer's chat template as a user turn
    (instruct models), and the response is the assistant turn.
    """
    if chat and ex.prompt:
        prompt_ids = tok.apply_chat_template([{"role": "user", "content": ex.prompt}], tokenize=True,
                                             add_generation_prompt=True)
        if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):
            prompt_ids = prompt_ids["input_ids"]
        prompt_ids = list(prompt_ids)
    else:
        prompt_ids = tok(ex.prompt, add_special_tokens=True)["input_ids"] if ex.prompt else []
    resp_ids = tok(ex.response, add_special_tokens=not prompt_ids)["input_ids"]
    if add_eos and tok.eos_token_id is not None:
        resp_ids = resp_ids + [tok.eos_token_id]
    ids = (prompt_ids + resp_ids)[:max_len]
    labels = ([IGNORE] * len(prompt_ids) + resp_ids)[:max_len]
    return {"input_ids": ids, "labels": labels}


def collate(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of encoded rows into ``input_ids``, ``attention_mask`` and ``labels``."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(r["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
