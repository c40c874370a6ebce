"""Per-token concepts of one text: top latents by activation and by attribution, with labels.

This is what ``probelab concepts`` prints and what the app shows. Texts longer than
``max_tokens`` are **truncated with a warning** (never refused); an empty text is an error.

>>> from probelab.models.tiny import tiny_llama, tiny_tokenizer
>>> from probelab.sae.tiny import tiny_sae
>>> rows = inspect_text(tiny_llama(), tiny_tokenizer(), tiny_sae(), "Hi!", labels=None)["tokens"]
>>> [r["token"] for r in rows]
['<|bos|>', 'H', 'i', '!']
"""
from __future__ import annotations

import warnings

import torch

from ..errors import ProbelabError
from .attribution import ConceptLabeler
from .evaluate import SINK_FACTOR


def inspect_text(model, tok, sae, text: str, top: int = 3, variant: str = "official", labels=None,
                 max_tokens: int = 256, **spec_overrides) -> dict:
    """``{"tokens": [{"token", "position", "sink", "loss", "by_activation": [...], "by_attribution": [...]}], ...}``.

    ``sink`` marks attention-sink tokens (residual norm > 10x the text's median): the SAE was
    not trained on them, so their concepts are not meaningful.

    ``labels``: a :class:`~probelab.sae.labels.ConceptLabels` (adds ``label`` to each concept) or None.
    """
    if not isinstance(text, str) or not text.strip():
        raise ProbelabError("the text is empty")
    limit = min(max_tokens, int(getattr(model.config, "max_position_embeddings", max_tokens) or max_tokens))
    ids = tok(text, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        raise ProbelabError("the text has no tokens")
    truncated = ids.shape[1] > limit
    if truncated:
        warnings.warn(f"text has {ids.shape[1]} tokens; truncated to the first {limit}", stacklevel=2)
        ids = ids[:, :limit]
    labeler = ConceptLabeler(model, sae, k_attr=min(top, int(sae.cfg.d_sae)), variant=variant, **spec_overrides)
    att = labeler.attribution(ids, torch.ones_like(ids))
    act_v, act_i = att.top(labeler.k_attr, "activation")
    att_v, att_i = att.top(labeler.k_attr, "attribution")

    def concepts(values, indices, b, t):
        out = []
        for v, i in zip(values[b, t].tolist(), indices[b, t].tolist()):
            item = {"id": int(i), "value": round(float(v), 6)}
            if labels is not None:
                item["label"] = labels.label(i)
            out.append(item)
        return out

    norms = att.residual[0].float().norm(dim=-1)
    is_sink = norms > SINK_FACTOR * norms.median()
    rows = []
    for t, token_id in enumerate(ids[0].tolist()):
        rows.append({
            "position": t,
            "token": tok.decode([token_id]),
            "sink": bool(is_sink[t]),
            "loss": round(float(att.token_loss[0, t]), 4) if bool(att.valid[0, t]) else None,
            "by_activation": concepts(act_v, act_i, 0, t),
            "by_attribution": concepts(att_v, att_i, 0, t),
        })
    return {"text": text, "n_tokens": int(ids.shape[1]), "truncated": truncated, "site": labeler.site,
            "variant": {"activation": labeler.spec.activation, "loss": labeler.spec.loss, "sign": labeler.spec.sign},
            "tokens": rows}
