"""Self-contained offline HTML reports (plotly.js is inlined once; no CDN, no network).

``alignment_report(result)`` → one page with the score, per-layer drift curves, the UMAP maps,
neighbour tables and pair heatmaps. Every figure is a ``<div id="fig-...">``; :data:`FIGURES` lists
them so tests and users can check a page is complete.
"""
from __future__ import annotations

import html
import math
from typing import Callable

import numpy as np
import pandas as pd

FIGURES = ("fig-drift", "fig-umap-layer", "fig-umap-side", "fig-umap-category", "fig-grid", "fig-pairs",
           "tbl-neighbors")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#222}
h1{font-size:1.5em} h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}
th{background:#f4f4f4} .num{text-align:right;font-variant-numeric:tabular-nums} .lost{color:#b22}
.score{font-size:2em;font-weight:600} .note{color:#666;font-size:13px}
.wide{overflow-x:auto} details{margin:6px 0 14px} summary{cursor:pointer;color:#245;font-size:13px}
"""

SERIES_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")  # first, second, third series of a panel
EMPTY_FONT = dict(size=13, color="#666")


def style(fig):
    """The one look of probelab's figures, in report.html and the app: white template, plain tick numbers
    (0.0005, not 500µ; plotly picks as many decimals as the tick spacing needs, so 0.99995 never reads 1)."""
    fig.update_layout(template="plotly_white", font=dict(size=12))
    fig.update_xaxes(exponentformat="none")
    fig.update_yaxes(exponentformat="none", tickformat="")
    return fig


def empty_note(fig, text: str, row: int | None = None, col: int | None = None):
    """A sentence in the middle of an empty panel (instead of a blank one)."""
    if row is None:
        fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font=EMPTY_FONT)
        return fig
    n = (row - 1) * len(fig._grid_ref[0]) + col
    suffix = "" if n == 1 else str(n)
    xd, yd = fig.layout[f"xaxis{suffix}"].domain, fig.layout[f"yaxis{suffix}"].domain
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=(xd[0] + xd[1]) / 2 + 0.02,
                       y=(yd[0] + yd[1]) / 2, font=EMPTY_FONT, bgcolor="white")
    return fig



def page(title: str, body: str) -> str:
    """A full HTML page with plotly.js inlined in the head."""
    from plotly.offline import get_plotlyjs

    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style><script type=\"text/javascript\">{get_plotlyjs()}</script></head>"
            f"<body>{body}</body></html>\n")


def fig_html(fig, div_id: str) -> str:
    style(fig)
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})


def table_html(df: pd.DataFrame, table_id: str | None = None, floatfmt: str = "{:.4f}") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for v in r.values:
            if isinstance(v, (float, np.floating)):
                cells.append(f"<td class=\"num\">{'-' if not np.isfinite(v) else floatfmt.format(v)}</td>")
            else:
                cells.append(f"<td>{html.escape('-' if v is None else str(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    tid = f" id=\"{table_id}\"" if table_id else ""
    return f"<div class=\"wide\"><table{tid}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"


# ---- figures of one alignment -----------------------------------------------------------------
DRIFT_PANELS: list[tuple[str, list[tuple[str, str]]]] = [
    ("cosine (A vs B)", [("cosine", "last token"), ("cosine_mean_token", "mean token")]),
    ("Euclidean distance", [("euclidean", "raw, last"), ("euclidean_mean_token", "raw, mean")]),
    ("Euclidean, L2-normalised", [("euclidean_l2", "last token"), ("euclidean_l2_mean_token", "mean token")]),
    ("norm difference |B|-|A|", [("norm_diff", "last token")]),
    ("neighbour retention@k", [("nn_retention", "cosine"), ("nn_retention_euclidean", "Euclidean")]),
    ("pair cosine (semantic stability)", [("pair_cosine_pretrained", "side A"), ("pair_cosine_expanded", "side B"),
                                          ("offset_consistency", "offset consistency")]),
]


MIN_Y_SPAN = 1e-3  # a flat panel (identical sides: cosine 1 +- 1e-16) is drawn flat, not magnified


def y_range(values: list, errors: list) -> list[float] | None:
    """A y-axis range at least :data:`MIN_Y_SPAN` (relative to the values' size) wide, or ``None``
    (plotly's autorange) when the data already spans more; error bars count as data."""
    lo_hi = [(v - (e or 0.0), v + (e or 0.0)) for v, e in zip(values, errors)
             if v is not None and math.isfinite(v) and (e is None or math.isfinite(e))]
    if not lo_hi:
        return None
    lo, hi = min(a for a, _ in lo_hi), max(b for _, b in lo_hi)
    span = MIN_Y_SPAN * max(1.0, abs(lo), abs(hi))
    if hi - lo >= span:
        return None
    mid = (lo + hi) / 2
    return [mid - span / 2, mid + span / 2]


def drift_figure(rows: list[dict], with_weight: bool):
    """One panel per drift measure against the layer; each panel has its own small legend under it and
    its series keep the same colours in every panel (first blue, second orange, third green)."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    panels = DRIFT_PANELS + ([("interpolation weight w", [("weight", "mean w")])] if with_weight else [])
    cols = 3
    nrows = -(-len(panels) // cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=[p[0] for p in panels],
                        vertical_spacing=0.5 / nrows, horizontal_spacing=0.07)
    x = [r["layer"] for r in rows]
    for pi, (_, series) in enumerate(panels):
        row, col = pi // cols + 1, pi % cols + 1
        legend = "legend" if pi == 0 else f"legend{pi + 1}"
        panel_y, panel_err = [], []
        for si, (key, name) in enumerate(series):
            y = [r.get(key) for r in rows]
            std = [r.get(f"{key}_std") for r in rows]
            panel_y += y
            panel_err += std
            err = dict(type="data", array=std, visible=True) if all(s is not None for s in std) else None
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, legend=legend,
                                     line=dict(color=SERIES_COLORS[si % len(SERIES_COLORS)]), error_y=err,
                                     hovertemplate=f"{name}<br>layer %{{x}}: %{{y:.6g}}<extra></extra>"),
                          row=row, col=col)
        fig.update_xaxes(title_text="layer", title_standoff=2, row=row, col=col)
        fig.update_yaxes(range=y_range(panel_y, panel_err), row=row, col=col)
        n = (row - 1) * cols + col
        xd = fig.layout[f"xaxis{'' if n == 1 else n}"].domain
        yd = fig.layout[f"yaxis{'' if n == 1 else n}"].domain
        fig.update_layout({legend: dict(x=xd[0], xanchor="left", y=yd[0] - 0.2 / nrows, yanchor="top",
                                        orientation="h", font=dict(size=11), bgcolor="rgba(0,0,0,0)")})
    fig.update_layout(height=360 * nrows, showlegend=True, margin=dict(t=40, l=50, r=20, b=60))
    return fig


SYMBOLS = {"pretrained": "circle", "expanded": "diamond"}


def umap_figure(df: pd.DataFrame, color: str, title: str):
    """UMAP scatter coloured by ``layer`` (continuous), ``side`` or ``category``; symbol = side."""
    import plotly.express as px
    import plotly.graph_objects as go

    fig = go.Figure()
    palette = px.colors.qualitative.Dark24
    groups = ["pretrained", "expanded"] if color in ("layer", "side") else sorted(df[color].astype(str).unique())
    for gi, g in enumerate(groups):
        for side in ("pretrained", "expanded"):
            d = df[(df["side"] == side) & ((df[color].astype(str) == g) if color == "category" else (df["side"] == g))]
            if not len(d):
                continue
            if color == "layer":
                marker = dict(color=d["layer"], colorscale="Viridis", showscale=side == "pretrained",
                              colorbar=dict(title="layer"), cmin=df["layer"].min(), cmax=df["layer"].max())
            else:
                marker = dict(color=palette[gi % len(palette)])
            marker.update(symbol=SYMBOLS[side], size=6, opacity=0.8)
            name = side if color in ("layer", "side") else str(g)
            first = color in ("layer", "side") or side == "pretrained" or not (df[color].astype(str) == g)[
                df["side"] == "pretrained"].any()
            fig.add_trace(go.Scatter(
                x=d["x"], y=d["y"], mode="markers", name=name, marker=marker, legendgroup=str(g), showlegend=bool(first),
                customdata=np.stack([d["text"], d["layer"], d["category"]], axis=1),
                hovertemplate="%{customdata[0]}<br>layer %{customdata[1]} · %{customdata[2]}<extra>" + side + "</extra>"))
            if color == "side":
                break
    symbols = "circle: side A, diamond: side B"
    fig.update_layout(title=dict(text=f"{title} <span style='font-size:12px;color:#666'>({symbols})</span>",
                                 y=0.98, yanchor="top"),
                      height=600 if color == "category" else 560, xaxis_title="UMAP 1", yaxis_title="UMAP 2",
                      margin=dict(t=50, b=40),
                      legend=dict(orientation="h", yanchor="top", y=-0.12, xanchor="left", x=0.0, font=dict(size=11),
                                  title=None))
    return fig


def category_colors(categories) -> dict[str, str]:
    """One colour per category, the same in every panel and figure (sorted names, Dark24 palette)."""
    import plotly.express as px

    palette = px.colors.qualitative.Dark24
    return {c: palette[i % len(palette)] for i, c in enumerate(sorted({str(c) for c in categories}))}


def grid_figure(grid: pd.DataFrame, probes: pd.DataFrame, connect: str = "sides", sides: tuple[str, str] = ("A", "B")):
    """The Figure 8 grid: one row per model, one column per layer, each panel the two sides' states of
    the probe sentences on that layer's shared map (panels of a column share their axes).

    ``grid``: :func:`probelab.analysis.umap_layers.shared_layer_maps`; ``probes``: one row per probe with
    ``probe, text, category, pair_id``. ``connect``: ``"sides"`` joins each sentence's side-A and
    side-B state (its drift), ``"pairs"`` the two sentences of each analogy pair on side B, ``"none"``.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    runs = list(dict.fromkeys(grid.sort_values("row")["run"]))
    layers = sorted(grid["layer"].unique())
    R, C = len(runs), len(layers)
    info = probes.drop_duplicates("probe").set_index("probe").sort_index()
    colors = category_colors(info["category"])
    fig = make_subplots(rows=R, cols=C, column_titles=[f"layer {l}" for l in layers],
                        row_titles=[_short(r, 28) for r in runs], horizontal_spacing=0.02, vertical_spacing=0.03)
    shown = set()
    for ri, run in enumerate(runs):
        for ci, layer in enumerate(layers):
            d = grid[(grid["run"] == run) & (grid["layer"] == layer)]
            a = d[d["side"] == "pretrained"].set_index("probe").sort_index()
            b = d[d["side"] == "expanded"].set_index("probe").sort_index()
            lx, ly = [], []
            if connect == "sides":
                for p in a.index:
                    lx += [a.at[p, "x"], b.at[p, "x"], None]
                    ly += [a.at[p, "y"], b.at[p, "y"], None]
            elif connect == "pairs" and "pair_id" in info:
                for _, g in info.groupby("pair_id"):
                    if len(g) == 2:
                        p, q = g.index
                        lx += [b.at[p, "x"], b.at[q, "x"], None]
                        ly += [b.at[p, "y"], b.at[q, "y"], None]
            if lx:
                fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line=dict(color="#bbb", width=1),
                                         hoverinfo="skip", showlegend=False), row=ri + 1, col=ci + 1)
            for side_df, side, symbol in ((a, sides[0], "circle-open"), (b, sides[1], "diamond")):
                cats = info.loc[side_df.index, "category"].astype(str)
                for cat in sorted(set(cats)):
                    m = (cats == cat).to_numpy()
                    first = cat not in shown
                    shown.add(cat)
                    fig.add_trace(go.Scatter(
                        x=side_df["x"][m], y=side_df["y"][m], mode="markers",
                        name=cat, legendgroup=cat, showlegend=first,
                        marker=dict(color=colors[cat], symbol=symbol, size=7, line=dict(width=1.5, color=colors[cat])),
                        text=info.loc[side_df.index[m], "text"],
                        hovertemplate="%{text}<br>" + f"{html.escape(run)} · layer {layer} · {side}<extra>{cat}</extra>"),
                        row=ri + 1, col=ci + 1)
    for ri in range(R):  # a column is one fit: its panels share x and y ranges
        for ci in range(C):
            idx = ri * C + ci + 1
            ref = "" if ci == 0 else str(ci + 1)
            fig.layout[f"xaxis{'' if idx == 1 else idx}"].update(matches=f"x{ref}", showticklabels=False)
            fig.layout[f"yaxis{'' if idx == 1 else idx}"].update(matches=f"y{ref}", showticklabels=False)
    fig.update_layout(height=max(360, 260 * R + 160), margin=dict(t=60, l=20, r=70, b=20),
                      legend=dict(title=dict(text=f"category ({sides[0]}: open circle, {sides[1]}: diamond)", side="top"),
                                  font=dict(size=11),
                                  orientation="h", yanchor="top", y=-0.02, x=0))
    return fig


def _short(text: str, n: int) -> str:
    text = str(text)
    return text if len(text) <= n else "…" + text[-(n - 1):]


CHANGE_EPS = 1e-9  # a pair-cosine change below this everywhere is "no change" (float noise)


def pair_figure(pairs: pd.DataFrame):
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    d = pairs[pairs["token"] == "last"]
    names = ["pair_cosine_pretrained", "pair_cosine_expanded", "pair_cosine_change"]
    titles = ["pair cosine, side A", "pair cosine, side B", "change (B - A)"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, shared_yaxes=True)
    labels = (d.drop_duplicates("pair_id").set_index("pair_id")
              .apply(lambda r: f"{r['sentence_0']} / {r['sentence_1']}", axis=1))
    for i, name in enumerate(names):
        m = d.pivot(index="pair_id", columns="layer", values=name).loc[labels.index]
        if name.endswith("change") and not np.nanmax(np.abs(m.values), initial=0.0) > CHANGE_EPS:
            empty_note(fig, "no change:<br>side B keeps every<br>pair's cosine<br>(|B - A| < 1e-9 at<br>"
                            "every layer, e.g. an<br>expansion at init)", row=1, col=i + 1)
            fig.update_xaxes(visible=False, row=1, col=i + 1)
            continue
        scale = "RdBu" if name.endswith("change") else "Viridis"
        zmid = 0.0 if name.endswith("change") else None
        fig.add_trace(go.Heatmap(z=m.values, x=[str(c) for c in m.columns], y=list(labels.values), colorscale=scale,
                                 zmid=zmid, showscale=(i != 0), colorbar=dict(x=0.64 if i == 1 else 1.0, len=0.9),
                                 hovertemplate="%{y}<br>layer %{x}: %{z:.4f}<extra></extra>"), row=1, col=i + 1)
        fig.update_xaxes(title_text="layer", type="category", row=1, col=i + 1)
    fig.update_layout(height=max(400, 14 * len(labels) + 120), margin=dict(l=260))
    return fig


def neighbour_tables(result, layers: list[int], shown: int = 10) -> str:
    """Per layer: the ``shown`` probes with the lowest neighbour retention, the rest folded in ``<details>``."""
    nn = result.tables["neighbors"]
    nn = nn[nn["metric"] == "cosine"]
    probes = result.tables["probes"]
    probes = probes[probes["token"] == "last"]
    k = int(result.summary["k"])
    parts = []
    for layer in layers:
        d = nn[nn["layer"] == layer]
        texts = d[(d["side"] == "pretrained") & (d["rank"] == 1)].sort_values("probe")["text"].to_numpy()
        n = len(texts)
        side = {s: d[d["side"] == s].sort_values(["probe", "rank"]) for s in ("pretrained", "expanded")}
        a_idx = side["pretrained"]["neighbor"].to_numpy().reshape(n, k)
        a_txt = side["pretrained"]["neighbor_text"].to_numpy().reshape(n, k)
        b_idx = side["expanded"]["neighbor"].to_numpy().reshape(n, k)
        b_txt = side["expanded"]["neighbor_text"].to_numpy().reshape(n, k)
        ret = probes[probes["layer"] == layer].sort_values("probe")["nn_retention"].to_numpy()
        rows = []
        for i in np.argsort(ret, kind="stable"):  # the probes whose neighbours changed most first
            kept = set(a_idx[i].tolist())
            bcells = ", ".join(html.escape(t) if j in kept else f"<span class=\"lost\">{html.escape(t)}</span>"
                               for j, t in zip(b_idx[i], b_txt[i]))
            rows.append(f"<tr><td>{html.escape(texts[i])}</td><td>{html.escape(', '.join(a_txt[i]))}</td>"
                        f"<td>{bcells}</td><td class=\"num\">{ret[i]:.2f}</td></tr>")
        head = ("<thead><tr><th>probe</th><th>neighbours, side A</th><th>neighbours, side B</th>"
                "<th>retention@k</th></tr></thead>")
        parts.append(f"<h3>layer {layer} (cosine neighbours; red: not a side-A neighbour; lowest retention first)</h3>"
                     f"<table>{head}<tbody>{''.join(rows[:shown])}</tbody></table>")
        if len(rows) > shown:
            parts.append(f"<details><summary>all {len(rows)} probes of layer {layer}</summary>"
                         f"<table>{head}<tbody>{''.join(rows[shown:])}</tbody></table></details>")
    return "".join(parts)


def _section(title: str, content: str, note: str = "") -> str:
    n = f"<p class=\"note\">{note}</p>" if note else ""
    return f"<h2>{html.escape(title)}</h2>{n}{content}"


def alignment_report(result) -> str:
    """The report page of one :class:`~probelab.analysis.align.AlignmentResult`."""
    s = result.summary
    rows = result.layer_rows
    sides = s["sides"]
    comp = pd.DataFrame([{"component": k, "value": (np.nan if v is None else v)} for k, v in s["components"].items()])
    sil = pd.DataFrame([{"silhouette of layer labels": k, "value": (np.nan if v is None else v)}
                        for k, v in s["silhouette"].items()])
    head = (f"<h1>probelab alignment: {html.escape(s['checkpoint'])}</h1>"
            f"<p>mode <b>{s['mode']}</b>; side A = {html.escape(sides['pretrained'])}; side B = "
            f"{html.escape(sides['expanded'])}; probes <b>{html.escape(str(s['probes']))}</b> ({s['n_probes']} sentences,"
            f" {s['n_pairs']} pairs); {s['token']}-token states; k = {s['k']}.</p>"
            f"<p class=\"score\">alignment score {s['alignment_score']:.4f}</p>"
            + table_html(comp) + table_html(sil))
    body = [head]
    body.append(_section("Per-layer drift", fig_html(drift_figure(rows, any(r.get("weight") is not None for r in rows)),
                                                      "fig-drift"),
                         "Mean over probes; error bars: standard deviation over probes."))
    if "umap" in result.tables:
        u = result.tables["umap"]
        body.append(_section("UMAP of all probe states (both sides, every layer)",
                             fig_html(umap_figure(u, "layer", "coloured by layer"), "fig-umap-layer")
                             + fig_html(umap_figure(u, "side", "coloured by side"), "fig-umap-side")
                             + fig_html(umap_figure(u, "category", "coloured by category"), "fig-umap-category"),
                             f"umap-learn, metric {s['umap']['metric']}, random_state {s['umap']['seed']}, "
                             f"L2-normalised states: {s['umap']['normalized']}. Circles / diamonds: sides A / B."))
    else:
        body.append(_section("UMAP", "<p>(not computed: run without --no-umap)</p>"))
    if "umap" in result.tables and getattr(result, "states", None) is not None:
        from .compare import grid_section, probe_info

        run = {"_name": s["checkpoint"], "_states": {**result.states, "layers": list(s["layers_compared"])},
               "_probes": probe_info(result.tables["probes"])}
        body.append(grid_section([run]) + "<p class=\"note\">Several checkpoints as rows of one grid: "
                    "<code>probelab compare DIR1 DIR2 ... --layers L1,L2 --out OUT</code>.</p>")
    if len(result.tables["pairs"]):
        body.append(_section("Semantic stability of analogy pairs", fig_html(pair_figure(result.tables["pairs"]),
                                                                              "fig-pairs")))
    worst = min(rows, key=lambda r: r["nn_retention"])["layer"]
    show = sorted({rows[-1]["layer"], worst})
    body.append(_section("Nearest neighbours", f"<div id=\"tbl-neighbors\">{neighbour_tables(result, show)}</div>",
                         "The last compared layer and the layer with the lowest mean retention."))
    table = pd.DataFrame(rows)
    body.append(_section("Per-layer numbers", table_html(table.dropna(axis=1, how="all"), "tbl-layers")))
    return page(f"alignment: {s['checkpoint']}", "".join(body))
