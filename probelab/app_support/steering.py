"""Steered vs unsteered greedy generation of one prompt (what ``probelab steer`` prints, as data).

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
