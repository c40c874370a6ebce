"""Per-token concepts of one text: top latents by activation and by attribution, with labels.

This is what ``probelab concepts`` prints and what the app shows. Texts longer than
``max_tokens`` are **truncated with a warning** (never refused); an empty text is an error.

**The sign of the attribution score.** score = activation x d(loss)/d(activation), so removing a
latent changes the loss by about -score: a *positive* score means the concept raises the loss
(removing it would help the prediction), a *negative* one that it supports the prediction.
``order`` picks which end to show: ``signed`` (most positive first: what CoCoMix trains on),
``absolute`` (largest |score|, either sign) or ``supporting`` (most negative first).

>>> import torch
>>> rank_scores(torch.tensor([0.5, -2.0, 1.0, -0.1]), 2, "signed")[1].tolist()
[2, 0]
>>> rank_scores(torch.tensor([0.5, -2.0, 1.0, -0.1]), 2, "supporting")[1].tolist()
[1, 3]

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

ORDERS = ("signed", "absolute", "supporting")


def score_meaning(loss: str = "sequence") -> str:
    """One line saying what the sign of an attribution score means (shown by the CLI and the app)."""
    what = "the text's mean next-token loss" if loss == "sequence" else "the next token's loss"
    return (f"attribution = activation x gradient of {what}: positive = the concept raises the loss "
            f"(removing it would lower the loss by about the score), negative = it supports the prediction")


def rank_scores(scores: torch.Tensor, k: int, order: str = "signed", hide: torch.Tensor | None = None):
    """``(values, indices)`` of the top ``k`` latents along the last dim of ``scores`` in ``order``.

    ``signed``: largest score first; ``absolute``: largest |score| first (values keep their sign);
    ``supporting``: most negative first. ``hide`` ([d] bool) leaves those latents out.
    """
    if order not in ORDERS:
        raise ProbelabError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    key = {"signed": scores, "absolute": scores.abs(), "supporting": -scores}[order].float()
    if hide is not None:
        key = key.masked_fill(hide.to(key.device), float("-inf"))
    k = min(int(k), key.shape[-1] - (0 if hide is None else int(hide.sum())))
    if k <= 0:
        raise ProbelabError("every latent is hidden: nothing to rank")
    _, idx = torch.topk(key, k, dim=-1)
    return scores.gather(-1, idx), idx


def inspect_text(model, tok, sae, text: str, top: int = 3, variant: str = "official", labels=None,
                 max_tokens: int = 256, order: str = "signed", density=None, hide_dense: bool = False,
                 **spec_overrides) -> dict:
    """``{"tokens": [{"token", "position", "sink", "loss", "by_activation": [...], "by_attribution": [...]}], ...}``.

    ``sink`` marks attention-sink tokens (residual norm > 10x the text's median): the SAE was
    not trained on them, so their concepts are not meaningful.

    ``labels``: a :class:`~probelab.sae.labels.ConceptLabels` (adds ``label`` to each concept) or None.
    ``order``: how ``by_attribution`` is ranked (:data:`ORDERS`). ``density``: a
    :class:`~probelab.sae.density.Density`; each concept then carries ``density`` (share of held-out
    tokens it fires on) and ``dense`` (above :data:`~probelab.sae.density.DENSE_THRESHOLD`), and
    ``hide_dense`` leaves dense latents out of both rankings.
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
    if order not in ORDERS:
        raise ProbelabError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    if hide_dense and density is None:
        raise ProbelabError("hiding dense latents needs their firing density")
    labeler = ConceptLabeler(model, sae, k_attr=min(top, int(sae.cfg.d_sae)), variant=variant, **spec_overrides)
    if order == "supporting" and labeler.spec.sign == "absolute":
        raise ProbelabError("order 'supporting' needs signed scores (drop sign=absolute)")
    att = labeler.attribution(ids, torch.ones_like(ids))
    dens = dense = hide = None
    if density is not None:
        dens, dense = density.density, density.dense
        if len(dens) != att.scores.shape[-1]:
            raise ProbelabError(f"the density has {len(dens)} latents, the SAE {att.scores.shape[-1]}")
        hide = torch.as_tensor(dense, dtype=torch.bool) if hide_dense else None
    act_v, act_i = rank_scores(att.post, labeler.k_attr, "signed", hide)
    att_v, att_i = rank_scores(att.scores, labeler.k_attr, order, hide)

    def concepts(values, indices, b, t):
        out = []
        for v, i in zip(values[b, t].tolist(), indices[b, t].tolist()):
            item = {"id": int(i), "value": round(float(v), 6)}
            if labels is not None:
                item["label"] = labels.label(i)
            if dens is not None:
                item["density"] = round(float(dens[i]), 6)
                item["dense"] = bool(dense[i])
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
            # no next token (the last one): the loss does not depend on this position, every score is 0
            "by_attribution": concepts(att_v, att_i, 0, t) if bool(att.valid[0, t]) else [],
        })
    return {"text": text, "n_tokens": int(ids.shape[1]), "truncated": truncated, "site": labeler.site,
            "variant": {"activation": labeler.spec.activation, "loss": labeler.spec.loss, "sign": labeler.spec.sign},
            "order": order, "score_meaning": score_meaning(labeler.spec.loss), "hide_dense": bool(hide_dense),
            "dense_threshold": _dense_threshold() if density is not None else None, "tokens": rows}


def _dense_threshold() -> float:
    from .density import DENSE_THRESHOLD

    return DENSE_THRESHOLD
