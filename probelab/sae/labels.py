"""Human-readable labels for SAE latents: top-activating contexts and promoted tokens.

For every latent, computed once over a slice of the corpus and cached as JSON:

- ``contexts``: the ``n_contexts`` tokens where the latent fires hardest, with a few tokens of
  left context (the firing token is shown between ``[[ ]]``);
- ``top_tokens``: the tokens it fires on most often among its strongest activations;
- ``promoted``: the tokens its decoder direction pushes up when read directly through the
  final norm's gain and the unembedding (``W_U (g * W_dec[i])``, a direct-logit view);
- ``label``: a short string for tables: its top firing tokens, ``a|b|c``; ``(dead)`` if it never fired.

>>> from probelab.models.tiny import tiny_llama, tiny_tokenizer
>>> from probelab.sae.tiny import tiny_sae
>>> labels = concept_labels(tiny_llama(), tiny_tokenizer(), tiny_sae(), texts=["abc abc", "hello"], cache=False)
>>> len(labels), isinstance(labels.label(0), str)
(128, True)
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import ProbelabError
from ..paths import atomic_write_text, cache_dir
from .evaluate import sink_mask, site_states
from .load import check_sae_fits

FORMAT = "probelab.concept_labels"
VERSION = 2


@dataclass
class ConceptInfo:
    id: int
    label: str
    frequency: float  # share of corpus tokens where it is active
    top_tokens: list[str] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)
    contexts: list[dict] = field(default_factory=list)  # {"text": ..., "act": ...}


class ConceptLabels:
    """Labels of every latent of one SAE (index with the latent id)."""

    def __init__(self, infos: list[ConceptInfo], meta: dict | None = None):
        self.infos, self.meta = infos, meta or {}

    def __len__(self) -> int:
        return len(self.infos)

    def __getitem__(self, i: int) -> ConceptInfo:
        return self.infos[int(i)]

    def label(self, i: int) -> str:
        return self.infos[int(i)].label

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, "meta": self.meta,
                           "latents": [asdict(x) for x in self.infos]})

    def save(self, path: str | Path) -> Path:
        atomic_write_text(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "ConceptLabels":
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ProbelabError(f"cannot read concept labels {path}: {str(e).splitlines()[0]}") from None
        if raw.get("format") != FORMAT or raw.get("version") != VERSION:
            raise ProbelabError(f"{path} is not a probelab concept-label file (version {VERSION})")
        return cls([ConceptInfo(**x) for x in raw["latents"]], raw.get("meta", {}))


def _readable(tok, token_id: int) -> str:
    return tok.decode([int(token_id)]).replace("\n", "\\n")


@torch.no_grad()
def promoted_tokens(model, tok, sae, n: int = 5) -> list[list[str]]:
    """Top ``n`` tokens each latent's decoder direction promotes through final-norm gain and unembedding."""
    W_dec = sae.W_dec.detach().float()  # [d_sae, d]
    gain = getattr(getattr(getattr(model, "model", model), "norm", None), "weight", None)
    if gain is not None:
        W_dec = W_dec * gain.detach().float()
    W_U = model.get_output_embeddings().weight.detach().float()  # [V, d]
    out = []
    for i in range(0, W_dec.shape[0], 512):
        top = (W_dec[i:i + 512] @ W_U.T).topk(n, dim=-1).indices
        out.extend([[_readable(tok, t) for t in row.tolist()] for row in top])
    return out


@torch.no_grad()
def concept_labels(model, tok, sae, texts: list[str] | None = None, n_texts: int = 300, n_contexts: int = 5,
                   n_promoted: int = 5, window: int = 8, cache: bool = True, sae_path: str | Path | None = None,
                   progress: bool = False) -> ConceptLabels:
    """Labels for every latent of ``sae`` (cached under ``cache_dir()/concept_labels`` when ``cache``)."""
    site = check_sae_fits(sae, model)
    if texts is None:
        from .corpus import wiki_texts

        texts = wiki_texts()[1][:n_texts]  # held-out intros: the same text for every SAE
    key = _cache_key(sae, model, texts, sae_path, n_contexts)
    path = cache_dir() / "concept_labels" / f"{key}.json"
    if cache and path.is_file():
        return ConceptLabels.load(path)
    enc_ids = [tok(t, truncation=True, max_length=256)["input_ids"] for t in texts]
    states = site_states(model, tok, texts, site, skip_first=False, progress=progress)
    d_sae = int(sae.cfg.d_sae)
    dtype = next(sae.parameters()).dtype
    rows, cols, vals, where = [], [], [], []
    n_tokens = 0
    for ti, h in enumerate(states):
        keep = sink_mask(h).nonzero().flatten()  # attention-sink tokens are not labelled
        z = sae.encode(h[keep].to(device=sae.W_dec.device, dtype=dtype)).to(h.device)
        nz = z.nonzero(as_tuple=True)
        rows.append(keep[nz[0]])  # position in the text
        cols.append(nz[1])
        vals.append(z[nz].float())
        where.append(torch.full_like(nz[0], ti))
        n_tokens += len(keep)
    pos, lat, val, txt = (torch.cat(x) for x in (rows, cols, vals, where))
    counts = torch.bincount(lat, minlength=d_sae)
    order = torch.argsort(val, descending=True)  # strongest first; grouped per latent below
    pos, lat, val, txt = pos[order], lat[order], val[order], txt[order]
    promoted = promoted_tokens(model, tok, sae, n_promoted)
    best: dict[int, list[int]] = {}
    for j, latent in enumerate(lat.tolist()):
        lst = best.setdefault(latent, [])
        if len(lst) < 20:
            lst.append(j)
    infos = []
    for i in range(d_sae):
        picks = best.get(i, [])
        firing = [_readable(tok, enc_ids[txt[j]][pos[j]]) for j in picks]
        top_tokens = [t for t, _ in Counter(firing).most_common(3)]
        contexts = []
        for j in picks[:n_contexts]:
            ids, p = enc_ids[txt[j]], int(pos[j])
            left = tok.decode(ids[max(0, p - window):p])
            contexts.append({"text": f"{left}[[{tok.decode([ids[p]])}]]".replace("\n", " "),
                             "act": round(float(val[j]), 4)})
        label = "|".join(t.strip() or repr(t) for t in top_tokens) if top_tokens else "(dead)"
        infos.append(ConceptInfo(i, label, counts[i].item() / max(n_tokens, 1), top_tokens, promoted[i], contexts))
    labels = ConceptLabels(infos, {"n_texts": len(texts), "n_tokens": n_tokens, "site": site})
    if cache:
        labels.save(path)
    return labels


def _cache_key(sae, model, texts: list[str], sae_path, n_contexts: int) -> str:
    from ..analysis.cache import folder_fingerprint, weights_key

    h = hashlib.sha1()
    h.update(weights_key(model).encode())  # the weights' content, not the path: a model replaced in place misses
    h.update(f"{sae.cfg.d_in}/{sae.cfg.d_sae}/{n_contexts}/{VERSION}".encode())
    h.update(sae.W_dec.detach().float().flatten()[:4096].numpy().tobytes())
    h.update(sae.W_enc.detach().float().flatten()[:4096].numpy().tobytes())
    for t in texts:
        h.update(t.encode())
    if sae_path is not None and Path(sae_path).is_dir():
        h.update(folder_fingerprint(sae_path).encode())
    return h.hexdigest()[:20]
