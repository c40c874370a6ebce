"""Steered vs unsteered greedy generation of one prompt (what ``probelab steer`` prints, as data),
and the page's dose-response sweep (:mod:`probelab.steering_sweep`) as a table.

- a CoCoMix model: the concepts' predicted logits are multiplied by ``factor`` before TopK
  (:func:`probelab.models.cocomix.steer_cocomix`);
- any other model: ``factor`` times each concept's SAE decoder direction is added to the residual
  stream at the SAE's layer (:func:`probelab.models.cocomix.steer_residual`).

>>> from probelab.models.tiny import tiny_llama, tiny_tokenizer
>>> from probelab.sae.tiny import tiny_sae
>>> out = steer_pair(tiny_llama(), tiny_tokenizer(), "Hi", {3: 0.0}, sae=tiny_sae(), max_new_tokens=4)
>>> out["steered"] == out["unsteered"]
True
"""
from __future__ import annotations

from typing import Mapping

from ..errors import ProbelabError


def greedy(model, tok, prompt: str, max_new_tokens: int = 20) -> str:
    """The greedy continuation of ``prompt`` (the new text only)."""
    import torch

    from .concepts import is_cocomix

    enc = tok(prompt, return_tensors="pt")
    from ..models.devices import input_device

    device = input_device(model)  # the embedding's device (the first shard of a device_map model)
    enc = {k: v.to(device) for k, v in enc.items()}
    with torch.no_grad():
        if is_cocomix(model):
            out = model.generate(enc["input_ids"], enc["attention_mask"], max_new_tokens=max_new_tokens,
                                 eos_token_id=tok.eos_token_id)
        else:
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def steer_pair(model, tok, prompt: str, concepts: Mapping[int, float], sae=None, max_new_tokens: int = 20) -> dict:
    """``{"unsteered", "steered", "how"}`` for ``prompt`` steered by ``{concept id: factor}``."""
    from ..models.cocomix import steer_cocomix, steer_residual
    from .concepts import is_cocomix

    if not isinstance(prompt, str) or not prompt.strip():
        raise ProbelabError("the prompt is empty")
    if not concepts:
        raise ProbelabError("no concept to steer by")
    if is_cocomix(model):
        how = "concept logit x factor before TopK (CoCoMix)"
        steering = steer_cocomix(model, dict(concepts))
    else:
        if sae is None:
            raise ProbelabError("this model is not a CoCoMix model: choose an SAE to steer its residual stream")
        how = "residual stream + factor x SAE decoder direction"
        steering = steer_residual(model, sae, dict(concepts))
    with steering:
        steered = greedy(model, tok, prompt, max_new_tokens)
    plain = greedy(model, tok, prompt, max_new_tokens)
    return {"unsteered": plain, "steered": steered, "how": how}


def parse_targets(text: str) -> list[str]:
    """Target tokens typed as ``a | b | c`` (spaces inside a target are kept: `` Paris``), empty ones dropped.

    >>> parse_targets("| Paris| London |")
    [' Paris', ' London ']
    """
    return [t for t in (text or "").split("|") if t.strip()]


def sweep(model, tok, prompt: str, concept: int, scales, sae=None, max_new_tokens: int = 20,
          targets=(), label: str = ""):
    """:func:`probelab.steering_sweep.steering_sweep` (the concept's ``label`` shown with it)."""
    from ..steering_sweep import steering_sweep

    return steering_sweep(model, tok, prompt, int(concept), scales, sae=sae, max_new_tokens=max_new_tokens,
                          targets=targets, label=label or "(no label)")


def sweep_frame(result):
    """The dose-response table as a DataFrame (one row per scale, numbers kept as numbers)."""
    import pandas as pd

    rows = []
    for r in result.rows:
        row = {"scale": r.scale, result.measure: r.activation if result.kind == "sae" else r.logit}
        if result.kind == "cocomix":
            row["chosen"] = r.chosen
        row.update({f"p({t!r})": r.targets[t] for t in result.target_tokens})
        row.update({"kl": r.kl, "ppl": r.perplexity, "continuation": r.text, "changed": r.changed})
        rows.append(row)
    return pd.DataFrame(rows)
