"""Side by side of several alignment folders (the paper's Figure 8 a-f panel, or a training trajectory).

``compare(dirs, out)`` reads each ``metrics.json`` (and ``umap.csv`` when present) and writes
``compare.csv`` (one row per checkpoint and layer, with the checkpoint's score and components) and
``compare.html`` (score trajectory, overlaid drift curves, one UMAP map per checkpoint).
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from ..errors import ProbelabError
from ..paths import atomic_dir, check_out
from .report import fig_html, page, table_html

CURVES = ("cosine", "euclidean", "relative_euclidean", "nn_retention", "pair_cosine_expanded", "pair_cosine_change")


def read_alignment(folder: str | Path) -> dict:
    folder = Path(folder)
    f = folder / "metrics.json"
    if not f.is_file():
        raise ProbelabError(f"{folder} is not an alignment folder (no metrics.json); make one with `probelab align`")
    try:
        m = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ProbelabError(f"{f} is not valid JSON ({e.msg}, line {e.lineno})") from None
    if "alignment_score" not in m or "layers" not in m:
        raise ProbelabError(f"{f} lacks alignment_score/layers; was it written by `probelab align`?")
    u = folder / "umap.csv"
    m["_umap"] = pd.read_csv(u) if u.is_file() else None
    m["_name"] = folder.name
    return m


def compare_table(runs: list[dict]) -> pd.DataFrame:
    rows = []
    for order, m in enumerate(runs):
        base = {"order": order, "run": m["_name"], "checkpoint": m.get("checkpoint"), "mode": m.get("mode"),
                "alignment_score": m["alignment_score"],
                **{f"score_{k}": v for k, v in (m.get("components") or {}).items()}}
        for layer in m["layers"]:
            rows.append({**base, **layer})
    return pd.DataFrame(rows)


def scores_table(runs: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{"run": m["_name"], "mode": m.get("mode"), "alignment_score": m["alignment_score"],
                          **(m.get("components") or {}),
                          **{k: v for k, v in (m.get("silhouette") or {}).items()}} for m in runs])


def _figures(runs: list[dict], table: pd.DataFrame) -> str:
    import plotly.express as px
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    sc = scores_table(runs)
    traj = go.Figure(go.Scatter(x=sc["run"], y=sc["alignment_score"], mode="lines+markers", name="score"))
    for comp in ("direction", "magnitude", "neighbourhood", "stability"):
        if comp in sc:
            traj.add_trace(go.Scatter(x=sc["run"], y=sc[comp], mode="lines+markers", name=comp, line=dict(dash="dot")))
    traj.update_layout(title="alignment score per checkpoint", yaxis_title="score", height=420)
    parts = [fig_html(traj, "fig-trajectory")]

    curves = [c for c in CURVES if c in table.columns]
    fig = make_subplots(rows=-(-len(curves) // 3), cols=3, subplot_titles=curves)
    colors = px.colors.qualitative.Plotly
    for ri, m in enumerate(runs):
        d = table[table["run"] == m["_name"]]
        for ci, c in enumerate(curves):
            fig.add_trace(go.Scatter(x=d["layer"], y=d[c], mode="lines+markers", name=m["_name"], legendgroup=m["_name"],
                                     showlegend=ci == 0, line=dict(color=colors[ri % len(colors)])),
                          row=ci // 3 + 1, col=ci % 3 + 1)
    fig.update_layout(height=330 * (-(-len(curves) // 3)))
    parts.append(fig_html(fig, "fig-compare-drift"))

    with_map = [m for m in runs if m["_umap"] is not None]
    if with_map:
        cols = min(3, len(with_map))
        nrows = -(-len(with_map) // cols)
        grid = make_subplots(rows=nrows, cols=cols, subplot_titles=[m["_name"] for m in with_map])
        lo = min(m["_umap"]["layer"].min() for m in with_map)  # one colour scale for every panel
        hi = max(m["_umap"]["layer"].max() for m in with_map)
        for i, m in enumerate(with_map):
            u = m["_umap"]
            for side, symbol in (("pretrained", "circle"), ("expanded", "diamond")):
                d = u[u["side"] == side]
                grid.add_trace(go.Scatter(x=d["x"], y=d["y"], mode="markers", text=d["text"], showlegend=False,
                                          marker=dict(color=d["layer"], colorscale="Viridis", symbol=symbol, size=5, cmin=lo, cmax=hi,
                                                      showscale=(i == 0 and side == "pretrained"))),
                               row=i // cols + 1, col=i % cols + 1)
        grid.update_layout(height=380 * nrows, title="UMAP per checkpoint (colour: layer; circle A, diamond B)")
        parts.append(fig_html(grid, "fig-compare-umap"))
    parts.append(table_html(sc, "tbl-scores"))
    return "".join(parts)


def compare(dirs: list[str | Path], out: str | Path, overwrite: bool = False) -> tuple[Path, pd.DataFrame]:
    """Write ``out/compare.csv`` and ``out/compare.html`` for alignment folders ``dirs`` (in that order)."""
    if len(dirs) < 1:
        raise ProbelabError("compare needs at least one alignment folder")
    check_out(out, "compare", overwrite)
    runs = [read_alignment(d) for d in dirs]
    names = [m["_name"] for m in runs]
    if len(set(names)) != len(names):  # same folder names in different parents: use the full paths
        for m, d in zip(runs, dirs):
            m["_name"] = str(d)
    table = compare_table(runs)
    body = ("<h1>probelab: alignment of " + html.escape(", ".join(m["_name"] for m in runs)) + "</h1>"
            + _figures(runs, table))
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite, kind="compare") as tmp:
        table.to_csv(tmp / "compare.csv", index=False)
        (tmp / "compare.html").write_text(page("probelab compare", body), encoding="utf-8")
    return out, scores_table(runs)
