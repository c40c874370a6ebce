"""SAE feature dashboards: everything about one latent, from one scan of held-out text.

:func:`feature_store` reads the SAE's site over held-out Wikipedia intros (the texts
:mod:`probelab.sae.density` and :mod:`probelab.sae.labels` use; attention sinks left out) and keeps
every non-zero activation, the decoder directions' direct effect on the output (through the final
norm's gain and the unembedding) and the labels. It is computed once per SAE and model and cached,
keyed by the content of both (:func:`probelab.sae.density.weights_key` for the SAE,
:func:`probelab.analysis.cache.weights_key` for the model): a replaced model or SAE
is scanned again. :meth:`FeatureStore.latent` then builds one latent's dashboard in milliseconds:

- ``density`` (share of tokens where it fires), ``count``, ``dense`` (> 10% of tokens), ``dead``;
- ``histogram`` of its non-zero activations;
- ``top``: the top-activating contexts, with left *and* right context and the firing token marked,
  each context token carrying this latent's activation there;
- ``quantiles``: examples from several activation ranges (weak to strong), not just the top;
- ``promoted`` / ``suppressed``: output tokens its decoder direction pushes up / down;
- ``label`` and ``top_tokens`` (:func:`probelab.sae.labels.concept_labels`).

:func:`latent_html` renders a dashboard as one self-contained HTML page (inline CSS and SVG, no
scripts, nothing fetched), which opens offline.

>>> from probelab.models.tiny import tiny_llama, tiny_tokenizer
>>> from probelab.sae.tiny import tiny_sae
>>> store = feature_store(tiny_llama(), tiny_tokenizer(), tiny_sae(), texts=["abc abc", "hello"], cache=False)
>>> dash = store.latent(int(store.counts.argmax()))
>>> dash["count"] == int(store.counts.max()), sorted(dash)[:4]
(True, ['count', 'd_sae', 'dead', 'dense'])
"""
from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ProbelabError
from ..paths import atomic_write_bytes, cache_dir
from .density import DENSE_THRESHOLD, Density, default_texts, model_key, texts_key, weights_key

VERSION = 1
N_OUTPUT = 10   # promoted / suppressed tokens kept per latent
MAX_LENGTH = 256


@dataclass
class FeatureStore:
    """Every non-zero activation of every latent over the scanned texts, grouped by latent."""

    lat_offsets: np.ndarray   # [d_sae + 1]: latent i's entries are [lat_offsets[i], lat_offsets[i+1])
    values: np.ndarray        # [nnz] float32, strongest first within each latent
    text_index: np.ndarray    # [nnz] int32
    position: np.ndarray      # [nnz] int32: token position in its text
    token_ids: np.ndarray     # all texts' token ids, concatenated
    tok_offsets: np.ndarray   # [n_texts + 1]
    promoted_ids: np.ndarray  # [d_sae, N_OUTPUT]
    promoted_vals: np.ndarray
    suppressed_ids: np.ndarray
    suppressed_vals: np.ndarray
    n_tokens: int
    meta: dict                # site, key, labels, top_tokens, vocab of every id shown

    @property
    def d_sae(self) -> int:
        return len(self.lat_offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.lat_offsets)

    @property
    def density(self) -> np.ndarray:
        return self.counts / max(self.n_tokens, 1)

    def as_density(self) -> Density:
        return Density(self.counts.astype(np.int64), self.n_tokens, len(self.tok_offsets) - 1, int(self.meta["site"]))

    def label(self, i: int) -> str:
        return self.meta["labels"][int(i)]

    def _tok(self, i: int) -> str:
        return self.meta["vocab"][str(int(i))]

    def _check(self, i) -> int:
        try:
            i = int(i)
        except (TypeError, ValueError):
            raise ProbelabError(f"latent must be an integer, got {i!r}") from None
        if not 0 <= i < self.d_sae:
            raise ProbelabError(f"unknown latent {i}: this SAE has {self.d_sae} latents (0..{self.d_sae - 1})")
        return i

    # ---- one latent --------------------------------------------------------------------------
    def _context(self, j: int, acts: dict, window: int) -> dict:
        t, p = int(self.text_index[j]), int(self.position[j])
        ids = self.token_ids[self.tok_offsets[t]:self.tok_offsets[t + 1]]
        lo, hi = max(0, p - window), min(len(ids), p + window + 1)
        toks = [{"token": self._tok(ids[q]), "act": round(float(acts.get((t, q), 0.0)), 4)} for q in range(lo, hi)]
        return {"text": t, "position": p, "act": round(float(self.values[j]), 4),
                "left": "".join(x["token"] for x in toks[:p - lo]), "token": toks[p - lo]["token"],
                "right": "".join(x["token"] for x in toks[p - lo + 1:]), "window": toks, "focus": p - lo}

    def latent(self, i: int, n_top: int = 12, n_quantiles: int = 5, per_quantile: int = 3, window: int = 10,
               n_bins: int = 30) -> dict:
        """The dashboard of latent ``i`` (a JSON-ready dict; see the module docstring)."""
        i = self._check(i)
        a, b = int(self.lat_offsets[i]), int(self.lat_offsets[i + 1])
        vals = self.values[a:b]
        acts = {(int(t), int(p)): float(v) for t, p, v in zip(self.text_index[a:b], self.position[a:b], vals)}
        count = b - a
        density = count / max(self.n_tokens, 1)
        out = {
            "latent": i, "d_sae": self.d_sae, "label": self.label(i), "top_tokens": self.meta["top_tokens"][i],
            "count": count, "n_tokens": self.n_tokens, "density": density, "dense": density > DENSE_THRESHOLD,
            "dead": count == 0, "site": self.meta["site"], "n_texts": len(self.tok_offsets) - 1,
            "promoted": [{"token": self._tok(t), "value": round(float(v), 4)}
                         for t, v in zip(self.promoted_ids[i], self.promoted_vals[i])],
            "suppressed": [{"token": self._tok(t), "value": round(float(v), 4)}
                           for t, v in zip(self.suppressed_ids[i], self.suppressed_vals[i])],
            "histogram": {"counts": [], "edges": []}, "top": [], "quantiles": [],
        }
        if count == 0:
            return out
        lo, hi = float(vals.min()), float(vals.max())
        hist, edges = np.histogram(vals, bins=n_bins, range=(lo, hi) if hi > lo else (lo - 0.5, hi + 0.5))
        out["histogram"] = {"counts": hist.tolist(), "edges": [round(float(e), 5) for e in edges]}
        out["top"] = [self._context(a + j, acts, window) for j in range(min(n_top, count))]
        # examples from activation ranges: equal-count bins of this latent's activations, weakest first
        order = np.arange(count)[::-1]  # ascending activation
        rng = np.random.default_rng(i)
        for q, part in enumerate(np.array_split(order, min(n_quantiles, count))):
            if len(part) == 0:
                continue
            picks = np.sort(rng.choice(len(part), size=min(per_quantile, len(part)), replace=False))
            lo_v, hi_v = float(vals[part[0]]), float(vals[part[-1]])
            out["quantiles"].append({
                "range": [round(lo_v, 4), round(hi_v, 4)],
                "share": [round(q / min(n_quantiles, count), 3), round((q + 1) / min(n_quantiles, count), 3)],
                "examples": [self._context(a + int(part[k]), acts, window) for k in picks[::-1]]})
        out["quantiles"].reverse()  # strongest range first, like the top contexts
        return out

    # ---- many latents ------------------------------------------------------------------------
    def table(self) -> list[dict]:
        """One row per latent: id, label, density, count, dense, dead, top tokens, promoted tokens."""
        dens, counts = self.density, self.counts
        return [{"latent": i, "label": self.label(i), "density": float(dens[i]), "count": int(counts[i]),
                 "dense": bool(dens[i] > DENSE_THRESHOLD), "dead": bool(counts[i] == 0),
                 "top_tokens": self.meta["top_tokens"][i],
                 "promoted": [self._tok(t) for t in self.promoted_ids[i, :5]]} for i in range(self.d_sae)]

    def search(self, word: str, min_density: float = 0.0, max_density: float = 1.0) -> list[dict]:
        """Latents whose label, top firing tokens or promoted tokens contain ``word`` (case-insensitive),
        exact token matches first, then by density; within the density range."""
        w = (word or "").strip().lower()
        if not w:
            raise ProbelabError("the search word is empty")
        hits = []
        for row in self.table():
            if not min_density <= row["density"] <= max_density:
                continue
            fields = {"label": [] if row["dead"] else [row["label"]], "top token": row["top_tokens"],
                      "promoted": row["promoted"]}
            where = [k for k, vs in fields.items() if any(w in v.lower() for v in vs)]
            if not where:
                continue
            exact = any(v.strip().lower() == w for vs in fields.values() for v in vs)
            hits.append({**row, "match": where, "_exact": exact})
        hits.sort(key=lambda r: (not r["_exact"], -r["density"]))
        for r in hits:
            r.pop("_exact")
        return hits

    # ---- persistence -------------------------------------------------------------------------
    _ARRAYS = ("lat_offsets", "values", "text_index", "position", "token_ids", "tok_offsets", "promoted_ids",
               "promoted_vals", "suppressed_ids", "suppressed_vals")

    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        arrays = {n: np.ascontiguousarray(getattr(self, n)) for n in self._ARRAYS}
        return save(arrays, metadata={"probelab": json.dumps({"format": "probelab.sae_features", "version": VERSION,
                                                              "n_tokens": self.n_tokens, "meta": self.meta})})

    @classmethod
    def from_file(cls, path) -> "FeatureStore":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            head = json.loads((f.metadata() or {})["probelab"])
            if head.get("format") != "probelab.sae_features" or head.get("version") != VERSION:
                raise ProbelabError(f"{path} is not a probelab feature store (version {VERSION})")
            arrays = {n: f.get_tensor(n) for n in cls._ARRAYS}
        return cls(**arrays, n_tokens=int(head["n_tokens"]), meta=head["meta"])


# ---- building ----------------------------------------------------------------------------------
@torch.no_grad()
def output_effects(model, sae, n: int = N_OUTPUT) -> tuple[np.ndarray, ...]:
    """``(promoted_ids, promoted_vals, suppressed_ids, suppressed_vals)``, each ``[d_sae, n]``: the tokens each
    latent's decoder direction pushes up / down most, read through the final norm's gain and the unembedding."""
    from ..analysis.lens import final_norm

    W_dec = sae.W_dec.detach().float().cpu()
    try:
        gain = getattr(final_norm(model), "weight", None)
    except ProbelabError:
        gain = None
    if gain is not None:
        W_dec = W_dec * gain.detach().float().cpu()
    W_U = model.get_output_embeddings().weight.detach().float().cpu()
    n = min(n, W_U.shape[0])
    parts = [[], [], [], []]
    for i in range(0, W_dec.shape[0], 256):
        logits = W_dec[i:i + 256] @ W_U.T
        up, down = logits.topk(n, dim=-1), (-logits).topk(n, dim=-1)
        for k, x in enumerate((up.indices, up.values, down.indices, -down.values)):
            parts[k].append(x)
    ids_up, v_up, ids_down, v_down = (torch.cat(p).numpy() for p in parts)
    return ids_up.astype(np.int32), v_up.astype(np.float32), ids_down.astype(np.int32), v_down.astype(np.float32)


def store_key(model, sae, texts: list[str]) -> str:
    from .load import check_sae_fits

    site = check_sae_fits(sae, model)
    return hashlib.blake2b(f"features/v{VERSION}/{site}/{weights_key(sae)}/{model_key(model)}/{texts_key(texts)}"
                           .encode(), digest_size=16).hexdigest()


@torch.no_grad()
def feature_store(model, tok, sae, texts: list[str] | None = None, n_texts: int = 300, cache: bool = True,
                  sae_path=None, progress: bool = False) -> FeatureStore:
    """Scan held-out text once for ``sae`` on ``model`` (cached by the content of both; see the module docstring)."""
    from .evaluate import sink_mask, site_states
    from .labels import concept_labels
    from .load import check_sae_fits

    site = check_sae_fits(sae, model)
    given = texts is not None
    texts = default_texts(n_texts) if texts is None else list(texts)
    if not texts:
        raise ProbelabError("no texts to scan the SAE's latents on")
    key = store_key(model, sae, texts)
    path = cache_dir() / "sae_features" / f"store-{key}.safetensors"
    if cache and path.is_file():
        try:
            return FeatureStore.from_file(path)
        except Exception:  # noqa: BLE001 - a damaged entry is rebuilt
            pass
    enc = [tok(t, truncation=True, max_length=MAX_LENGTH)["input_ids"] for t in texts]
    order = sorted(range(len(texts)), key=lambda k: -len(enc[k]))  # batches of similar length: little padding
    by_length = site_states(model, tok, [texts[k] for k in order], site, max_length=MAX_LENGTH, skip_first=False,
                            progress=progress)
    states: list = [None] * len(texts)
    for k, h in zip(order, by_length):
        states[k] = h
    dtype, device = next(sae.parameters()).dtype, next(sae.parameters()).device
    lat, val, txt, pos = [], [], [], []
    n_tokens = 0
    for ti, h in enumerate(states):
        if len(enc[ti]) != h.shape[0]:
            raise ProbelabError(f"tokenisation mismatch on text {ti} ({len(enc[ti])} ids vs {h.shape[0]} states)")
        keep = sink_mask(h).nonzero().flatten()
        if len(keep) == 0:
            continue
        z = sae.encode(h[keep].to(device=device, dtype=dtype)).float().cpu()
        rows, cols = z.nonzero(as_tuple=True)
        lat.append(cols.numpy())
        val.append(z[rows, cols].numpy())
        pos.append(keep[rows].numpy())
        txt.append(np.full(len(rows), ti))
        n_tokens += len(keep)
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)
    lat, val, txt, pos = cat(lat, np.int64), cat(val, np.float32), cat(txt, np.int32), cat(pos, np.int32)
    order = np.lexsort((-val, lat))  # by latent, strongest first
    lat, val, txt, pos = lat[order], val[order], txt[order], pos[order]
    d_sae = int(sae.cfg.d_sae)
    offsets = np.searchsorted(lat, np.arange(d_sae + 1)).astype(np.int64)
    up_i, up_v, down_i, down_v = output_effects(model, sae)
    labels = concept_labels(model, tok, sae, texts=texts if given else None, n_texts=n_texts, cache=cache,
                            sae_path=sae_path, progress=progress)
    token_ids = np.asarray([i for ids in enc for i in ids], dtype=np.int32)
    tok_offsets = np.cumsum([0] + [len(ids) for ids in enc]).astype(np.int64)
    shown = set(np.unique(token_ids).tolist()) | set(np.unique(up_i).tolist()) | set(np.unique(down_i).tolist())
    vocab = {str(i): tok.decode([int(i)]) for i in sorted(shown)}
    meta = {"site": site, "key": key, "labels": [labels.label(i) for i in range(d_sae)],
            "top_tokens": [labels[i].top_tokens for i in range(d_sae)], "vocab": vocab,
            "model": str(getattr(model.config, "_name_or_path", "") or type(model).__name__),
            "sae_path": str(sae_path) if sae_path is not None else None}
    store = FeatureStore(offsets, val, txt, pos, token_ids, tok_offsets, up_i, up_v, down_i, down_v, n_tokens, meta)
    if cache:
        atomic_write_bytes(path, store.to_bytes())
    return store


def latent_dashboard(model, tok, sae, latent: int, **kwargs) -> dict:
    """The dashboard of one latent (builds or reads the cached :func:`feature_store` first)."""
    store_kw = {k: kwargs.pop(k) for k in ("texts", "n_texts", "cache", "sae_path", "progress") if k in kwargs}
    return feature_store(model, tok, sae, **store_kw).latent(latent, **kwargs)


# ---- HTML --------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px} .flag{background:#c62828;color:#fff;border-radius:3px;padding:1px 6px;font-size:12px}
.dead{background:#757575} table{border-collapse:collapse;font-size:13px} td,th{padding:3px 8px;text-align:left}
.ctx{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;white-space:pre-wrap;line-height:1.7}
.ctx span{border-radius:2px} .ctx .focus{outline:2px solid #e65100;font-weight:bold}
.act{color:#777;font-size:12px;font-family:ui-monospace,monospace;padding-right:10px;white-space:nowrap}
.tok{font-family:ui-monospace,monospace;background:#f3f3f3;border-radius:3px;padding:0 4px}
.up{color:#1b5e20} .down{color:#b71c1c} .cols{display:flex;gap:40px}
"""


def _esc(s: str) -> str:
    return html.escape(s).replace("\n", "\u21b5")


def context_html(ctx: dict, top: float) -> str:
    """One context as a table row: its activation, then the window's tokens shaded by this latent's activation."""
    parts = []
    for k, t in enumerate(ctx["window"]):
        alpha = min(1.0, t["act"] / top) if top > 0 else 0.0
        cls = ' class="focus"' if k == ctx["focus"] else ""
        style = f' style="background:rgba(255,140,0,{alpha:.2f})"' if alpha > 0 else ""
        parts.append(f'<span{cls}{style} title="{t["act"]:.3f}">{_esc(t["token"])}</span>')
    return f'<tr><td class="act">{ctx["act"]:.3f}</td><td class="ctx">{"".join(parts)}</td></tr>'


def histogram_svg(hist: dict, width: int = 640, height: int = 160) -> str:
    counts, edges = hist["counts"], hist["edges"]
    if not counts:
        return "<p class='meta'>never active on the scanned tokens</p>"
    peak = max(counts) or 1
    n = len(counts)
    bw = (width - 40) / n
    bars = []
    for k, c in enumerate(counts):
        h = (height - 30) * c / peak
        bars.append(f'<rect x="{30 + k * bw:.1f}" y="{height - 20 - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                    f'height="{h:.1f}" fill="#ef6c00"><title>{edges[k]:.3g}-{edges[k + 1]:.3g}: {c}</title></rect>')
    axis = (f'<text x="30" y="{height - 4}" font-size="11">{edges[0]:.3g}</text>'
            f'<text x="{width - 10}" y="{height - 4}" font-size="11" text-anchor="end">{edges[-1]:.3g}</text>'
            f'<text x="{width / 2}" y="{height - 4}" font-size="11" text-anchor="middle">activation</text>'
            f'<text x="2" y="12" font-size="11">{peak}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="activation histogram">{"".join(bars)}{axis}</svg>')


def latent_html(dash: dict, title: str = "") -> str:
    """One self-contained HTML page for a latent's dashboard (inline CSS and SVG; no scripts, no downloads)."""
    i = dash["latent"]
    flags = ""
    if dash["dense"]:
        flags += f' <span class="flag">dense: fires on more than {DENSE_THRESHOLD:.0%} of tokens</span>'
    if dash["dead"]:
        flags += ' <span class="flag dead">dead: never fired</span>'
    top = dash["top"][0]["act"] if dash["top"] else 0.0
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>latent {i}: {_esc(dash['label'])}</title><style>{CSS}</style></head><body>",
           f"<h1>Latent {i} <span class='tok'>{_esc(dash['label'])}</span>{flags}</h1>",
           f"<p class='meta'>{_esc(title)} SAE on residual index {dash['site']} · {dash['d_sae']} latents · "
           f"density <b>{100 * dash['density']:.3f}%</b> ({dash['count']} of {dash['n_tokens']} held-out tokens in "
           f"{dash['n_texts']} texts; attention sinks excluded) · fires most on: "
           f"{', '.join(_esc(repr(t)) for t in dash['top_tokens']) or '-'}</p>",
           "<h2>Activation histogram (non-zero activations)</h2>", histogram_svg(dash["histogram"]),
           "<h2>Output tokens (decoder direction through the final norm's gain and the unembedding)</h2>",
           "<div class='cols'>"]
    for name, cls in (("promoted", "up"), ("suppressed", "down")):
        rows = "".join(f"<tr><td><span class='tok'>{_esc(x['token'])}</span></td><td class='{cls}'>{x['value']:+.3f}"
                       "</td></tr>" for x in dash[name])
        out.append(f"<div><b>{name}</b><table>{rows}</table></div>")
    out.append("</div><h2>Top-activating contexts</h2>")
    if dash["top"]:
        out.append("<p class='meta'>the firing token is outlined; shading = this latent's activation on each token"
                   "</p><table>" + "".join(context_html(c, top) for c in dash["top"]) + "</table>")
    else:
        out.append("<p class='meta'>none: the latent never fired on the scanned text</p>")
    if dash["quantiles"]:
        out.append("<h2>Examples across activation ranges</h2>")
        for q in dash["quantiles"]:
            out.append(f"<p class='meta'>activations {q['range'][0]:.3g} to {q['range'][1]:.3g} "
                       f"(quantiles {q['share'][0]:.0%}-{q['share'][1]:.0%} of its firings)</p><table>"
                       + "".join(context_html(c, top) for c in q["examples"]) + "</table>")
    out.append("</body></html>")
    return "\n".join(out)
