"""Side by side of several alignment folders (the paper's Figure 8 a-f panel, or a training trajectory).

``compare(dirs, out)`` reads each ``metrics.json`` (and ``umap.csv`` when present) and writes
``compare.csv`` (one row per checkpoint and layer, with the checkpoint's score and components) and
``compare.html`` (score trajectory, overlaid drift curves, the Figure 8 grid, one UMAP map per checkpoint).

The Figure 8 grid (:func:`figure8`): one row per alignment (up to 4: e.g. at init, Lerp+MSE, Lerp
without divergence loss, full fine-tuning), one column per chosen layer; each panel places the two
sides' last-token states of the probe sentences on a map fitted once per layer on every row's states,
so a column's panels are directly comparable. It needs the ``states.safetensors`` that
``probelab align`` writes into each folder.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from ..errors import ProbelabError
from ..paths import atomic_dir, check_out
from .report import fig_html, page, table_html
from .umap_layers import STATES_FILE, load_states

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
    m["_states"] = load_states(folder / STATES_FILE)
    p = folder / "probes.csv"
    m["_probes"] = probe_info(pd.read_csv(p)) if p.is_file() else None
    return m


# ---- the Figure 8 grid ---------------------------------------------------------------------------
def probe_info(probes: pd.DataFrame) -> pd.DataFrame:
    """One row per probe (``probe, text, category, pair_id``) from an alignment's probes table."""
    d = probes[probes["token"] == "last"] if "token" in probes else probes
    cols = [c for c in ("probe", "text", "category", "pair_id") if c in d]
    return d.drop_duplicates("probe")[cols].sort_values("probe").reset_index(drop=True)


def grid_embed(use_cache: bool = True, seed: int = 0):
    """The map used for every grid column: UMAP (cosine, the alignment defaults) through the analysis cache."""
    from .align import AnalysisOptions, umap_coords
    from .umap_layers import LayerPoints

    opt = AnalysisOptions(use_cache=use_cache, seed=seed)
    return lambda x: umap_coords(LayerPoints(x, None, None, None), opt)


def figure8(runs: list[dict], layers: list[int] | None = None, embed_fn=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(grid, probes)`` for :func:`probelab.analysis.report.grid_figure` from runs read by
    :func:`read_alignment` (or shaped like them: ``_name``, ``_states``, ``_probes``).

    ``layers`` default to up to 4 layers spread over the layers every run compares.
    """
    from .umap_layers import GRID_MAX_ROWS, pick_layers, shared_layer_maps

    missing = [m["_name"] for m in runs if m.get("_states") is None]
    if missing:
        raise ProbelabError(f"no saved states in {', '.join(missing)} (written by `probelab align` since the "
                            "Figure 8 grid was added): re-run probelab align for it")
    if len(runs) > GRID_MAX_ROWS:
        raise ProbelabError(f"the Figure 8 grid has at most {GRID_MAX_ROWS} rows; got {len(runs)} alignments")
    texts = [tuple(m["_probes"]["text"]) if m.get("_probes") is not None else None for m in runs]
    if len({t for t in texts if t is not None}) > 1:
        raise ProbelabError("the alignments were run on different probe sentences; the grid needs one probe set")
    common = sorted(set.intersection(*[{int(x) for x in m["_states"]["layers"]} for m in runs]))
    if not common:
        raise ProbelabError("these alignments compare no layer in common (e.g. different merged layers)")
    if layers:
        bad = [l for l in layers if int(l) not in common]
        if bad:
            raise ProbelabError(f"layer(s) {', '.join(map(str, bad))} are not compared in every alignment; "
                                f"layers in common: {', '.join(map(str, common))}")
        chosen = [int(l) for l in dict.fromkeys(layers)]
    else:
        chosen = pick_layers(common)
    grid = shared_layer_maps([{"name": m["_name"], "layers": m["_states"]["layers"],
                               "pretrained": m["_states"]["pretrained"], "expanded": m["_states"]["expanded"]}
                              for m in runs], chosen, embed_fn=embed_fn or grid_embed())
    probes = next((m["_probes"] for m in runs if m.get("_probes") is not None), None)
    if probes is None:
        n = int(grid["probe"].max()) + 1
        probes = pd.DataFrame({"probe": range(n), "text": [f"probe {i}" for i in range(n)], "category": "-",
                               "pair_id": range(n)})
    return grid, probes


GRID_NOTE = ("One row per alignment, one column per layer. Each column is ONE UMAP fit on every row's states at "
             "that layer (L2-normalised last-token states, cosine), so its panels share coordinates: identical "
             "states land on identical points. Open circles: side A (pretrained branch, or the base model); "
             "diamonds: side B (expanded branch, or the fine-tuned model); grey lines join a sentence's two "
             "states; colour: probe category.")


def grid_section(runs: list[dict], layers: list[int] | None = None, embed_fn=None) -> str:
    """The HTML section with the grid, or a sentence saying why there is none."""
    from .report import grid_figure

    try:
        grid, probes = figure8(runs, layers, embed_fn)
    except ProbelabError as e:
        if layers:
            raise
        return f"<h2>Figure 8 grid</h2><p class=\"note\">Not drawn: {html.escape(str(e))}</p>"
    return ("<h2>Figure 8 grid</h2>" + f"<p class=\"note\">{html.escape(GRID_NOTE)}</p>"
            + fig_html(grid_figure(grid, probes), "fig-grid"))


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


def _figures(runs: list[dict], table: pd.DataFrame, grid: str = "") -> str:
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
    parts.append(grid)

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


def compare(dirs: list[str | Path], out: str | Path, overwrite: bool = False,
            layers: list[int] | None = None) -> tuple[Path, pd.DataFrame]:
    """Write ``out/compare.csv`` and ``out/compare.html`` for alignment folders ``dirs`` (in that order).

    ``layers``: the Figure 8 grid's columns (default: up to 4 spread over the layers in common); the grid
    rows are the first 4 folders."""
    if len(dirs) < 1:
        raise ProbelabError("compare needs at least one alignment folder")
    check_out(out, "compare", overwrite)
    runs = [read_alignment(d) for d in dirs]
    names = [m["_name"] for m in runs]
    if len(set(names)) != len(names):  # same folder names in different parents: use the full paths
        for m, d in zip(runs, dirs):
            m["_name"] = str(d)
    table = compare_table(runs)
    from .umap_layers import GRID_MAX_ROWS

    grid = grid_section(runs[:GRID_MAX_ROWS], layers)
    body = ("<h1>probelab: alignment of " + html.escape(", ".join(m["_name"] for m in runs)) + "</h1>"
            + _figures(runs, table, grid))
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite, kind="compare") as tmp:
        table.to_csv(tmp / "compare.csv", index=False)
        (tmp / "compare.html").write_text(page("probelab compare", body), encoding="utf-8")
    return out, scores_table(runs)
