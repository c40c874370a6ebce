"""Human-readable labels for SAE latents: top-activating contexts and promoted tokens.

For every latent, computed once over a slice of the corpus and cached as JSON:

- ``contexts``: the ``n_contexts`` tokens where the latent fires hardest, with a few tokens of
  left context (the firing token is shown between ``[[ ]]``);
- ``top_tokens``: the tokens it fires on most often among its strongest activations;
- ``promoted``: the tokens its decoder direction pushes up when read directly through the
  final norm's gain and the unembedding (``W_U (g * W_dec[i])``, a direct-logit view);
- ``label``: a short string for tables: its top firing tokens, ``a|b|c``; ``(dead)`` if it never fired.

Full labels read :data:`FULL_TEXTS` held-out intros (the model's forward pass up to the SAE site
over ~60k tokens: minutes on a 2-core CPU). What a person sees first (``probelab concepts``, the
app) uses :func:`display_labels`: the full labels when they are cached, else *quick* labels from
the first :data:`QUICK_TEXTS` of the same intros (the same latents fire, with fewer contexts to
choose from), built in seconds and cached too. ``probelab sae labels`` (and ``probelab sae train``)
build the full ones, which replace the quick ones from then on.

>>> from probelab.models.tiny import tiny_llama, tiny_tokenizer
>>> from probelab.sae.tiny import tiny_sae
>>> labels = concept_labels(tiny_llama(), tiny_tokenizer(), tiny_sae(), texts=["abc abc", "hello"], cache=False)
>>> len(labels), isinstance(labels.label(0), str)
(128, True)
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import ProbelabError
from ..paths import atomic_write_text, cache_dir
from .evaluate import sink_mask, site_states
from .load import check_sae_fits

FORMAT = "probelab.concept_labels"
VERSION = 2
FULL_TEXTS = 300   # held-out intros the full labels are read from
QUICK_TEXTS = 40   # the first ones of those, for the quick labels shown before the full ones exist
BATCH_TEXTS = 16   # texts per forward pass (sorted by length: little padding)


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


def _label_texts(n_texts: int) -> list[str]:
    from .corpus import wiki_texts

    return wiki_texts()[1][:n_texts]  # held-out intros: the same text for every SAE


def labels_path(model, tok, sae, texts: list[str] | None = None, n_texts: int = FULL_TEXTS, n_contexts: int = 5,
                sae_path: str | Path | None = None) -> Path:
    """Where :func:`concept_labels` caches (or finds) the labels for these arguments."""
    texts = _label_texts(n_texts) if texts is None else texts
    return cache_dir() / "concept_labels" / f"{_cache_key(sae, model, texts, sae_path, n_contexts)}.json"


def _states_by_length(model, tok, texts: list[str], site: int, max_length: int, progress: bool, desc: str):
    """Site states of ``texts`` (every real token), batched by similar length so padding costs little."""
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    states: list = [None] * len(texts)
    bar = tqdm(total=sum(lengths), desc=desc, unit="tok", disable=not progress, leave=False)
    try:
        for s in range(0, len(order), BATCH_TEXTS):
            chunk = order[s:s + BATCH_TEXTS]
            got = site_states(model, tok, [texts[i] for i in chunk], site, batch_size=len(chunk),
                              max_length=max_length, skip_first=False)
            for i, h in zip(chunk, got):
                states[i] = h
            bar.update(sum(lengths[i] for i in chunk))
    finally:
        bar.close()
    return states


@torch.no_grad()
def concept_labels(model, tok, sae, texts: list[str] | None = None, n_texts: int = FULL_TEXTS, n_contexts: int = 5,
                   n_promoted: int = 5, window: int = 8, cache: bool = True, sae_path: str | Path | None = None,
                   progress: bool = False, max_length: int = 256) -> ConceptLabels:
    """Labels for every latent of ``sae`` (cached under ``cache_dir()/concept_labels`` when ``cache``).

    ``progress``: a one-line notice of what is built, then a token progress bar (stderr).
    """
    site = check_sae_fits(sae, model)
    texts = _label_texts(n_texts) if texts is None else texts
    path = labels_path(model, tok, sae, texts, n_texts, n_contexts, sae_path)
    if cache and path.is_file():
        return ConceptLabels.load(path)
    enc_ids = [tok(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    if progress:
        print(f"probelab: building concept labels for {int(sae.cfg.d_sae)} SAE latents from {len(texts)} held-out "
              f"intros ({sum(map(len, enc_ids)):,} tokens; once per SAE, then cached)", file=sys.stderr, flush=True)
    states = _states_by_length(model, tok, texts, site, max_length, progress, "concept labels")
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


def display_labels(model, tok, sae, sae_path: str | Path | None = None, progress: bool = False) -> ConceptLabels:
    """The labels to show a person now: the full ones when cached, else the quick ones (built if needed).

    ``labels.meta["quick"]`` is True for quick labels (:data:`QUICK_TEXTS` intros instead of
    :data:`FULL_TEXTS`); ``probelab sae labels`` builds the full ones.
    """
    full = labels_path(model, tok, sae, sae_path=sae_path)
    if full.is_file():
        return ConceptLabels.load(full)
    labels = concept_labels(model, tok, sae, n_texts=QUICK_TEXTS, sae_path=sae_path, progress=progress)
    labels.meta["quick"] = True
    return labels


def quick_note(labels: ConceptLabels | None, sae: str = "default") -> str | None:
    """One line saying the labels are the quick ones and how to get the full ones (``None`` otherwise)."""
    if labels is None or not labels.meta.get("quick"):
        return None
    return (f"labels come from {labels.meta.get('n_texts')} intros ({labels.meta.get('n_tokens'):,} tokens), a quick "
            f"first build; `probelab sae labels {sae}` builds them from {FULL_TEXTS}")


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


def density_of(labels: ConceptLabels):
    """The firing density (:class:`probelab.sae.density.Density`) the label build measured on its own
    tokens (sinks excluded, as :func:`probelab.sae.density.latent_density` does): no second pass."""
    import numpy as np

    from .density import Density

    n = int(labels.meta.get("n_tokens", 0))
    counts = np.rint(np.array([x.frequency for x in labels.infos], dtype=np.float64) * n).astype(np.int64)
    return Density(counts, n, int(labels.meta.get("n_texts", 0)), int(labels.meta.get("site", 0)))
