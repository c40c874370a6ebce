"""Per-token concepts for the concepts page: SAE choice, rows, and token highlighting as HTML.

The numbers come from :func:`probelab.sae.inspect.inspect_text` (SAE activations and attribution
scores, top-k per token) and from a CoCoMix model's own forward pass (its predicted concept
logits); labels from :func:`probelab.sae.labels.concept_labels`. This module only reshapes them.

>>> rows = [{"position": 0, "token": "a", "by_activation": [{"id": 3, "value": 2.0, "label": "x"}]},
...         {"position": 1, "token": "b", "by_activation": [{"id": 5, "value": 1.0}]}]
>>> concept_values(rows, 3, "by_activation")
[2.0, 0.0]
>>> "title=" in token_html(["a", "b"], [2.0, 0.0], ["3 x (2)", ""])
True
"""
from __future__ import annotations

import html
import math
from collections import Counter
from typing import Callable

import pandas as pd

from ..errors import ProbelabError

RANKINGS = {"by_activation": "SAE activation", "by_attribution": "attribution score", "by_prediction": "predicted logit"}


# ---- SAE choice ---------------------------------------------------------------------------------
def _tiny(model):
    from ..sae.tiny import tiny_sae

    return tiny_sae(d_in=int(model.config.hidden_size), hook_name="model.layers.1")


# named SAEs built for a model rather than read from disk (the tiny random models' random SAE)
SAE_BUILDERS: dict[str, Callable] = {"tiny": _tiny}


def get_sae(source: str, model):
    """An SAE that fits ``model``: ``tiny`` (random, for tiny models), ``default`` (probelab's trained
    SAE for the embedded model; never trained from the app), or an sae-lens folder."""
    from ..sae import check_sae_fits, load_sae

    source = (source or "").strip()
    if not source:
        raise ProbelabError("no SAE given: enter 'default' or an SAE folder")
    if source in SAE_BUILDERS:
        sae = SAE_BUILDERS[source](model)
    else:
        if source == "default":
            from ..sae.train import TRAIN_TIME, default_sae_path

            if not (default_sae_path() / "cfg.json").is_file():
                raise ProbelabError("the default SAE is not trained yet: run `probelab sae train` once "
                                    f"({TRAIN_TIME}), or enter an SAE folder")
        sae = load_sae(source, progress=False)
    check_sae_fits(sae, model)
    return sae


def get_labels(model, tok, sae, source: str):
    """Concept labels for every latent: the full ones when cached, else quick ones from fewer intros (built
    in seconds, then cached; ``labels.meta["quick"]``, :func:`probelab.sae.labels.quick_note`)."""
    from ..sae.labels import display_labels

    return display_labels(model, tok, sae, sae_path=None if is_default_sae(source) else source)


def is_default_sae(source: str) -> bool:
    """``default``, a built SAE, or the default SAE's folder given by path (same labels cache entry)."""
    from pathlib import Path

    from ..sae.train import default_sae_path

    if source in SAE_BUILDERS or source == "default":
        return True
    try:
        return Path(source).expanduser().resolve() == default_sae_path().resolve()
    except OSError:
        return False


def concept_info(labels, concept_id):
    """The :class:`~probelab.sae.labels.ConceptInfo` of a concept id, or a readable error."""
    n = len(labels)
    try:
        cid = int(concept_id)
    except (TypeError, ValueError):
        raise ProbelabError(f"concept id must be a whole number, got {concept_id!r}") from None
    if not 0 <= cid < n:
        raise ProbelabError(f"unknown concept id {cid}: this SAE has {n} concepts (0..{n - 1})")
    return labels[cid]


# ---- per-token rows -----------------------------------------------------------------------------
def sae_rows(model, tok, sae, text: str, top: int = 3, variant: str = "official", labels=None,
             order: str = "signed", density=None, hide_dense: bool = False) -> dict:
    """:func:`probelab.sae.inspect.inspect_text` (top concepts per token by activation and attribution;
    ``order`` ranks the attribution scores, ``density`` adds each concept's firing density)."""
    from ..sae.inspect import inspect_text

    return inspect_text(model, tok, sae, text, top=top, variant=variant, labels=labels, order=order,
                        density=density, hide_dense=hide_dense)


def get_density(model, tok, sae, labels=None):
    """Firing density of every latent over held-out text (:func:`probelab.sae.density.latent_density`,
    cached on disk by SAE and model weights); with ``labels``, the density their build measured
    (:func:`probelab.sae.labels.density_of`: no second pass over the corpus)."""
    if labels is not None:
        from ..sae.labels import density_of

        return density_of(labels)
    from ..sae.density import latent_density

    return latent_density(model, tok, sae)


ORDER_HELP = {"signed": "most positive first: raise the loss most (what CoCoMix trains on)",
              "absolute": "largest |score| first, either sign",
              "supporting": "most negative first: help the prediction most"}


def is_cocomix(model) -> bool:
    from ..models.cocomix import CoCoMixForCausalLM

    return isinstance(model, CoCoMixForCausalLM)


def teacher_of(model, default_teacher: str, default_sae: str) -> tuple[str, str]:
    """``(teacher model, SAE)`` whose latents a CoCoMix model's concepts are: from the provenance its
    training stored in the ``cocomix.teacher`` block, else the given defaults."""
    t = getattr(getattr(model, "cocomix", None), "teacher", None) or {}
    return str(t.get("teacher") or default_teacher), str(t.get("sae") or default_sae)


def cocomix_rows(model, tok, text: str, top: int = 5, labels=None, max_tokens: int = 256) -> dict:
    """A CoCoMix model's predicted concepts per token (top ``top`` of its concept logits, as chosen by its TopK)."""
    import torch

    if not is_cocomix(model):
        raise ProbelabError(f"{type(model).__name__} is not a CoCoMix model: it predicts no concepts")
    if not isinstance(text, str) or not text.strip():
        raise ProbelabError("the text is empty")
    ids = tok(text, return_tensors="pt")["input_ids"][:, :max_tokens]
    with torch.no_grad():
        out = model(ids)
    k = min(top, out.concept_ids.shape[-1])
    chosen = out.concept_ids[0, :, :k]
    values = out.concept_logits[0].gather(-1, chosen)
    rows = []
    for t, token_id in enumerate(ids[0].tolist()):
        items = []
        for cid, v in zip(chosen[t].tolist(), values[t].tolist()):
            item = {"id": int(cid), "value": round(float(v), 6)}
            if labels is not None and cid < len(labels):
                item["label"] = labels.label(cid)
            items.append(item)
        rows.append({"position": t, "token": tok.decode([token_id]), "by_prediction": items})
    return {"text": text, "n_tokens": int(ids.shape[1]), "tokens": rows,
            "n_concepts": int(model.cocomix.n_concepts), "topk": int(model.cocomix.topk)}


def _describe(c: dict) -> str:
    tail = f", fires {100 * c['density']:.1f}%" + (" DENSE" if c.get("dense") else "") if "density" in c else ""
    return f"{c['id']}" + (f" {c['label']}" if c.get("label") else "") + f" ({c['value']:.3g}{tail})"


def rows_table(rows: list[dict], rankings=("by_activation", "by_attribution", "by_prediction")) -> pd.DataFrame:
    """One row per token: position, token, and its top concepts in each ranking present."""
    out = []
    for r in rows:
        row = {"#": r["position"], "token": r["token"]}
        if "loss" in r:
            row["next-token loss"] = r["loss"]
        for key in rankings:
            if key in r:
                row[RANKINGS[key]] = "  ".join(_describe(c) for c in r[key]) or "–"  # e.g. no next token
        out.append(row)
    return pd.DataFrame(out)


def concepts_in(rows: list[dict], key: str) -> pd.DataFrame:
    """The concepts that appear in ``key`` rankings of this text: id, label, tokens where they rank, best value."""
    count: Counter = Counter()
    best: dict[int, float] = {}
    label: dict[int, str] = {}
    density: dict[int, tuple[float, bool]] = {}
    for r in rows:
        for c in r.get(key, []):
            count[c["id"]] += 1
            best[c["id"]] = max(best.get(c["id"], -math.inf), c["value"])
            label.setdefault(c["id"], c.get("label", ""))
            if "density" in c:
                density[c["id"]] = (c["density"], bool(c.get("dense")))
    data = [{"concept": cid, "label": label[cid], "tokens": n, "max value": best[cid]} for cid, n in count.items()]
    cols = ["concept", "label", "tokens", "max value"]
    if density:
        for d in data:
            d["fires on"], d["dense"] = density.get(d["concept"], (float("nan"), False))
        cols += ["fires on", "dense"]
    return pd.DataFrame(data, columns=cols).sort_values(["tokens", "max value"], ascending=False, ignore_index=True)


def concept_values(rows: list[dict], concept_id: int, key: str) -> list[float]:
    """Per token: the value of ``concept_id`` where it is among the top concepts, else 0."""
    out = []
    for r in rows:
        out.append(next((float(c["value"]) for c in r.get(key, []) if c["id"] == concept_id), 0.0))
    return out


def top_values(rows: list[dict], key: str) -> list[float]:
    """Per token: the value of its first-ranked concept (0 where it has none)."""
    return [float(r[key][0]["value"]) if r.get(key) else 0.0 for r in rows]


def hover_titles(rows: list[dict], key: str) -> list[str]:
    return [f"#{r['position']} {r['token']!r}\n" + ("\n".join(_describe(c) for c in r.get(key, [])) or "–") for r in rows]


# ---- highlighting -------------------------------------------------------------------------------
POSITIVE = (230, 120, 0)
NEGATIVE = (30, 100, 220)


def _shown(token: str) -> str:
    return token.replace("\n", "\u21b5").replace("\t", "\u21e5") or "\u2205"


def token_html(tokens: list[str], values: list[float], titles: list[str], skip_first: bool = False) -> str:
    """Tokens as inline spans shaded by ``|value|`` (orange positive, blue negative), ``title`` on hover.

    ``skip_first``: leave the first token out of the shading scale (an attention-sink token's activations
    are often far larger than the rest; it is then shown at full strength).
    """
    ref = values[1:] if skip_first and len(values) > 1 else values
    scale = max((abs(v) for v in ref), default=0.0) or 1.0
    spans = []
    for tok, v, title in zip(tokens, values, titles):
        rgb = POSITIVE if v >= 0 else NEGATIVE
        alpha = 0.08 + 0.82 * min(1.0, abs(v) / scale) if v else 0.0
        spans.append(f'<span class="plt" style="background:rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.3f})" '
                     f'title="{html.escape(title, quote=True)}">{html.escape(_shown(tok))}</span>')
    style = ("<style>.plt{white-space:pre-wrap;border-radius:3px;padding:1px 0;margin:0 1px;"
             "font-family:ui-monospace,monospace;font-size:15px;line-height:2}</style>")
    return style + '<div class="plt-text">' + "".join(spans) + "</div>"
