"""Firing density of every SAE latent: the share of held-out corpus tokens where it is active.

The corpus is the SAE's held-out Wikipedia intros (:func:`probelab.sae.corpus.wiki_texts`, the
same texts :mod:`probelab.sae.labels` scans), read at the SAE's site one text at a time, with
attention-sink tokens left out (:func:`probelab.sae.evaluate.sink_mask`: the SAE was not trained
on them). A latent is *active* on a token when its activation is non-zero; a latent active on more
than :data:`DENSE_THRESHOLD` of the tokens is *dense* (it fires on almost anything and says little).

Results are cached under ``cache_dir()/sae_features``, keyed by the content of the SAE's and the
model's weights (:func:`weights_key`, :func:`model_key`) and the texts, so replacing either model or SAE recomputes.

>>> from probelab.models.tiny import tiny_llama, tiny_tokenizer
>>> from probelab.sae.tiny import tiny_sae
>>> d = latent_density(tiny_llama(), tiny_tokenizer(), tiny_sae(), texts=["abc abc", "hello"], cache=False)
>>> d.counts.shape, d.n_tokens, float(d.density.max()) <= 1.0
((128,), 12, True)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ProbelabError
from ..paths import atomic_write_bytes, cache_dir

DENSE_THRESHOLD = 0.10  # share of tokens above which a latent is flagged dense
VERSION = 1
_SAMPLE = 1 << 16  # elements hashed per tensor (evenly strided) by weights_key


def weights_key(module) -> str:
    """A content key of a module's weights: class, config, and for every tensor its name, dtype, shape
    and up to 65,536 evenly strided elements (all of them for small tensors).

    Fine-tuning, perturbing or replacing weights changes it; reloading the same files does not. It
    reads a strided sample, not every byte, so it takes milliseconds even for a large model.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(type(module).__name__.encode())
    cfg = getattr(module, "config", None) or getattr(module, "cfg", None)
    if cfg is not None:
        if hasattr(cfg, "to_json_string"):
            h.update(cfg.to_json_string(use_diff=False).encode())
        elif hasattr(cfg, "to_dict"):
            h.update(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, t in module.state_dict().items():
            flat = t.detach().reshape(-1)
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            if flat.numel() == 0:
                continue
            step = max(1, flat.numel() // _SAMPLE)
            sample = flat[::step].contiguous().cpu()
            h.update(sample.view(torch.uint8).numpy().tobytes() if sample.dtype != torch.bool
                     else sample.numpy().tobytes())
    return h.hexdigest()


def model_key(model) -> str:
    """Content key of a model's weights (:func:`probelab.analysis.cache.weights_key`: the digest of the
    folder it was loaded from plus a sample of the in-memory weights, or of all weights for a model built
    in memory), so a model replaced on disk or changed in memory gets a new key."""
    from ..analysis.cache import weights_key as _model_weights_key

    return _model_weights_key(model)


def texts_key(texts: list[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in texts:
        h.update(t.encode())
        h.update(b"\x00")
    return h.hexdigest()


def default_texts(n_texts: int = 300) -> list[str]:
    """The first ``n_texts`` held-out intros (the SAE never trained on them; labels scan the same ones)."""
    from .corpus import wiki_texts

    return wiki_texts()[1][:n_texts]


@dataclass
class Density:
    counts: np.ndarray  # [d_sae] int64: tokens where each latent is active
    n_tokens: int       # tokens scanned (sinks excluded)
    n_texts: int
    site: int           # residual index the SAE reads

    @property
    def density(self) -> np.ndarray:
        """``[d_sae]`` share of tokens where each latent fires (0 for every latent when no token was scanned)."""
        return self.counts / max(self.n_tokens, 1)

    @property
    def dense(self) -> np.ndarray:
        """``[d_sae]`` bool: latents active on more than :data:`DENSE_THRESHOLD` of the tokens."""
        return self.density > DENSE_THRESHOLD

    @property
    def dead(self) -> np.ndarray:
        """``[d_sae]`` bool: latents never active on these tokens."""
        return self.counts == 0


@torch.no_grad()
def count_active(sae, states: list[torch.Tensor], chunk: int = 4096) -> tuple[np.ndarray, int]:
    """``(counts [d_sae], n_tokens)``: how many of the given residual states each latent is active on."""
    d_sae = int(sae.cfg.d_sae)
    dtype = next(sae.parameters()).dtype
    device = next(sae.parameters()).device
    counts = torch.zeros(d_sae, dtype=torch.long)
    n = 0
    for h in states:
        for i in range(0, h.shape[0], chunk):
            z = sae.encode(h[i:i + chunk].to(device=device, dtype=dtype))
            counts += (z != 0).sum(0).cpu().long()
            n += z.shape[0]
    return counts.numpy().astype(np.int64), n


@torch.no_grad()
def latent_density(model, tok, sae, texts: list[str] | None = None, n_texts: int = 300, cache: bool = True,
                   progress: bool = False) -> Density:
    """Firing density of every latent of ``sae`` over held-out text (sinks excluded), cached by content.

    ``texts`` default to :func:`default_texts` (``n_texts`` held-out Wikipedia intros).
    """
    from .evaluate import site_states
    from .load import check_sae_fits

    site = check_sae_fits(sae, model)
    texts = default_texts(n_texts) if texts is None else list(texts)
    if not texts:
        raise ProbelabError("no texts to measure the SAE's firing density on")
    key = hashlib.blake2b(f"density/v{VERSION}/{site}/{weights_key(sae)}/{model_key(model)}/{texts_key(texts)}"
                          .encode(), digest_size=16).hexdigest()
    path = cache_dir() / "sae_features" / f"density-{key}.json"
    if cache and path.is_file():
        try:
            raw = json.loads(path.read_text())
            return Density(np.asarray(raw["counts"], dtype=np.int64), int(raw["n_tokens"]), int(raw["n_texts"]),
                           int(raw["site"]))
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry is recomputed
    states = site_states(model, tok, texts, site, skip_first=True, progress=progress)
    counts, n = count_active(sae, states)
    result = Density(counts, n, len(texts), site)
    if cache:
        atomic_write_bytes(path, json.dumps({"counts": counts.tolist(), "n_tokens": n, "n_texts": len(texts),
                                             "site": site}).encode())
    return result
