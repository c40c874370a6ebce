"""The Features page's logic: the latent table with search and density filter, and one latent's parts.

The numbers come from :func:`probelab.sae.features.feature_store` (one cached scan per SAE and
model); this module filters and shapes them for Streamlit.

>>> from probelab.models.tiny import tiny_llama, tiny_tokenizer
>>> from probelab.sae.tiny import tiny_sae
>>> store = get_store(tiny_llama(), tiny_tokenizer(), tiny_sae(), "tiny", texts=["abc abc", "hello"], cache=False)
>>> len(latent_table(store)), len(latent_table(store, hide_dead=True)) == int((store.counts > 0).sum())
(128, True)
"""
from __future__ import annotations

import pandas as pd

from ..errors import ProbelabError

# density range choices (share of tokens); the slider picks two of them
DENSITY_STEPS = [0.0, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.25, 1.0]


def get_store(model, tok, sae, source: str, **kwargs):
    """The SAE's feature store (scanned once per SAE and model, then read from the cache)."""
    from ..sae.features import feature_store
    from .concepts import is_default_sae

    return feature_store(model, tok, sae, sae_path=None if is_default_sae(source) else source, **kwargs)


def percent(x: float) -> str:
    return f"{100 * x:g}%"


def latent_table(store, word: str = "", min_density: float = 0.0, max_density: float = 1.0,
                 hide_dead: bool = False) -> pd.DataFrame:
    """Latents (optionally matching ``word``) within the density range, as a table."""
    rows = store.search(word, min_density, max_density) if word.strip() else \
        [r for r in store.table() if min_density <= r["density"] <= max_density]
    if hide_dead:
        rows = [r for r in rows if not r["dead"]]
    return pd.DataFrame([{"latent": r["latent"], "label": r["label"], "density %": round(100 * r["density"], 4),
                          "dense": r["dense"], "top tokens": " ".join(map(repr, r["top_tokens"])),
                          "promoted": " ".join(map(repr, r["promoted"]))} for r in rows],
                        columns=["latent", "label", "density %", "dense", "top tokens", "promoted"])


def latent_from_query(value, d_sae: int) -> int | None:
    """The ``?latent=`` query parameter as a latent id (None when absent); a bad value is an error."""
    if value in (None, ""):
        return None
    try:
        i = int(str(value))
    except ValueError:
        raise ProbelabError(f"?latent={value!r} is not a latent id") from None
    if not 0 <= i < d_sae:
        raise ProbelabError(f"unknown latent {i}: this SAE has {d_sae} latents (0..{d_sae - 1})")
    return i


def histogram_figure(dash: dict):
    import plotly.graph_objects as go

    h = dash["histogram"]
    edges = h["edges"]
    mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    fig = go.Figure(go.Bar(x=mids, y=h["counts"], width=[b - a for a, b in zip(edges[:-1], edges[1:])],
                           marker_color="#ef6c00", name="tokens"))
    fig.update_layout(title=f"activation histogram ({dash['count']} firings)", xaxis_title="activation",
                      yaxis_title="tokens", height=280, margin={"l": 40, "r": 10, "t": 40, "b": 40})
    return fig


def contexts_html(contexts: list[dict], top: float) -> str:
    """Contexts as an HTML table (the firing token outlined, tokens shaded by activation)."""
    from ..sae.features import CSS, context_html

    return f"<style>{CSS}</style><table>" + "".join(context_html(c, top) for c in contexts) + "</table>"


def outputs_table(dash: dict) -> pd.DataFrame:
    n = max(len(dash["promoted"]), len(dash["suppressed"]))
    cell = lambda xs, k, f: (xs[k][f] if k < len(xs) else None)
    return pd.DataFrame([{"promoted": repr(cell(dash["promoted"], k, "token")), "+": cell(dash["promoted"], k, "value"),
                          "suppressed": repr(cell(dash["suppressed"], k, "token")),
                          "-": cell(dash["suppressed"], k, "value")} for k in range(n)])
