"""The Lens page's logic: a token x layer heatmap of a logit-lens metric and the per-layer table.

The numbers come from :func:`probelab.analysis.lens.lens`; this module only picks a stream and a
metric and shapes them for plotly and a table.

>>> from probelab.models.tiny import tiny_llama, tiny_tokenizer
>>> res = compute(tiny_llama(), tiny_tokenizer(), "ab ab")
>>> grid(res, "resid", "kl").shape, stream_choices(res)
((5, 6), ['resid'])
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ProbelabError

METRICS = {
    "target_prob": "probability of the target",
    "kl": "KL(final || layer), nats",
    "entropy": "entropy, nats",
    "top_prob": "probability of the top token",
    "target_rank": "rank of the target (1 = top)",
}
STREAM_HELP = {
    "resid": "residual stream (every layer)",
    "pretrained": "Control LLM: the frozen pretrained branch (merged layers)",
    "expanded": "Control LLM: the trainable expanded branch (merged layers)",
    "merged": "Control LLM: the interpolated output (merged layers)",
}


def compute(model, tok, text: str, target: str | None = None, top_k: int = 5):
    """The lens of ``text`` (``target`` blank = the model's own prediction at each position)."""
    from ..analysis.lens import lens

    target = (target or None) if not isinstance(target, str) else (target if target.strip() else None)
    return lens(model, tok, text, target=target, top_k=top_k)


def stream_choices(result) -> list[str]:
    return list(result.streams)


def grid(result, stream: str, metric: str) -> np.ndarray:
    """``[n_layers, n_tokens]`` values of ``metric`` for ``stream``."""
    if stream not in result.streams:
        raise ProbelabError(f"this model has no {stream!r} stream; available: {', '.join(result.streams)}")
    return np.asarray(result.streams[stream].metric(metric), dtype=float)


def _label(tok: str, i: int) -> str:
    return f"{i}:{tok!r}"


def heatmap(result, stream: str, metric: str, title: str = "", zmax: float | None = None):
    """A plotly heatmap: tokens along x, layers along y (bottom = embeddings), hover = the top token there."""
    import plotly.graph_objects as go

    z = grid(result, stream, metric)
    s = result.streams[stream]
    top = [[result.vocab[int(i)] for i in row] for row in s.top_ids[..., 0]]
    hover = [[f"layer {layer} · token {result.tokens[t]!r}<br>top: {top[li][t]!r} "
              f"({s.top_probs[li, t, 0]:.3f})<br>target {result.targets[t]!r}: p={s.target_prob[li, t]:.3f}, "
              f"rank {s.target_rank[li, t]}<br>KL {s.kl[li, t]:.3f} · entropy {s.entropy[li, t]:.2f}"
              for t in range(z.shape[1])] for li, layer in enumerate(s.layers)]
    zmin = 0.0 if metric in ("target_prob", "top_prob", "kl", "entropy") else None
    if metric in ("target_prob", "top_prob") and zmax is None:
        zmax = 1.0
    fig = go.Figure(go.Heatmap(
        z=z.tolist(), x=[_label(t, i) for i, t in enumerate(result.tokens)], y=[str(layer) for layer in s.layers],
        text=[[t for t in row] for row in top], texttemplate="%{text}", textfont={"size": 9},
        hovertext=hover, hoverinfo="text", colorscale="Viridis", zmin=zmin, zmax=zmax,
        colorbar={"title": {"text": METRICS.get(metric, metric)}}))
    fig.update_layout(title=title, xaxis_title="token", yaxis_title="layer", height=max(320, 24 * len(s.layers) + 160),
                      margin={"l": 40, "r": 10, "t": 40, "b": 40}, yaxis={"type": "category"},
                      xaxis={"type": "category"})
    return fig


def rows_table(result, position: int, stream: str | None = None) -> pd.DataFrame:
    """Per (layer, stream) at one token: top tokens, target probability / rank, KL, entropy."""
    rows = result.rows(position, [stream] if stream else None)
    return pd.DataFrame([{
        "layer": r["layer"], "stream": r["stream"],
        "top tokens": "  ".join(f"{x['token']!r} {x['prob']:.2f}" for x in r["top"]),
        "target": repr(r["target"]), "p(target)": round(r["target_prob"], 4), "rank": r["target_rank"],
        "KL to final": round(r["kl"], 4), "entropy": round(r["entropy"], 3)} for r in rows])


def summary(result) -> str:
    what = f"target {result.targets[0]!r}" if result.target_given else "target: the model's own prediction per token"
    return (f"{len(result.tokens)} tokens · {result.meta['n_layers']} layers · streams: "
            f"{', '.join(result.streams)} · {what} · greedy next token: {result.greedy_token!r}")
