"""Readable plots in report.html and the app: tick format, legends, empty states, folded tables, offline pages,
explained and uncut summary columns."""
from __future__ import annotations

import re

import numpy as np
import pytest
from rich.console import Console

from probelab.analysis.align import AlignmentInput, AnalysisOptions, analyze
from probelab.analysis.report import alignment_report, drift_figure, pair_figure, style, umap_figure
from probelab.probes import Probe, ProbeSet

CATS = ["gender", "tense", "capital"]


def probe_set(n_pairs: int = 6) -> ProbeSet:
    items = []
    for i in range(n_pairs):
        for side in (0, 1):
            items.append(Probe(f"sentence {i}-{side}", f"p{i}", CATS[i % 3], side))
    return ProbeSet("synthetic", items)


def result(same: bool, umap: bool = False, seed: int = 0):
    """An alignment of synthetic states: side B equal to A (an expansion at init) or slightly moved."""
    rng = np.random.default_rng(seed)
    ps = probe_set()
    L, N, d = 3, len(ps.items), 16
    a = {t: rng.normal(size=(L, N, d)) + 3.0 for t in ("last", "mean")}
    b = {t: (a[t].copy() if same else a[t] + 0.05 * rng.normal(size=(L, N, d))) for t in a}
    inp = AlignmentInput("branches", [2, 4, 6], a, b, None, {"pretrained": "A", "expanded": "B"},
                         [[p.text] for p in ps.items])
    return analyze(inp, ps, AnalysisOptions(umap=umap, use_cache=False), checkpoint="synthetic")


def test_style_tick_format_never_rounds_cosines_to_one():
    from probelab.app_support.alignment import layer_ticks

    res = result(same=False)
    fig = layer_ticks(drift_figure(res.layer_rows, False), [2, 4, 6])
    for name in [k for k in fig.layout.to_plotly_json() if k.startswith("yaxis")]:
        ax = fig.layout[name]
        # no fixed significant-digit format (".4~g" turned 0.99991..0.99999 into "1, 1, 1"): plotly then picks
        # as many decimals as the tick spacing needs; no SI suffixes (500µ) either
        assert ax.tickformat in (None, "") and ax.exponentformat == "none"
    assert style(umap_figure(res.tables["probes"].assign(x=0.0, y=0.0, side="pretrained"), "side", "t")
                 ).layout.template.layout.paper_bgcolor in ("white", "#fff", "#ffffff", "rgb(255,255,255)")


def test_drift_panels_have_their_own_legend_and_consistent_colours():
    res = result(same=False)
    fig = drift_figure(res.layer_rows, False)
    legends = {t.legend for t in fig.data}
    assert len(legends) == 6  # one legend per panel
    by_panel: dict[str, list] = {}
    for t in fig.data:
        by_panel.setdefault(t.legend, []).append(t.line.color)
    firsts = {colours[0] for colours in by_panel.values()}
    assert len(firsts) == 1  # the first series of every panel has the same colour
    assert all(len(set(c)) == len(c) for c in by_panel.values())  # no two series of a panel share one
    names = [t.name for t in fig.data if t.legend == "legend"]
    assert names == ["last token", "mean token"]  # readable names, not metric keys


def test_change_heatmap_at_init_says_so_instead_of_a_blank_panel():
    at_init = pair_figure(result(same=True).tables["pairs"])
    texts = [a.text for a in at_init.layout.annotations]
    assert any(t.startswith("no change") for t in texts)
    assert len(at_init.data) == 2  # no empty third heatmap
    moved = pair_figure(result(same=False).tables["pairs"])
    assert len(moved.data) == 3 and not any(a.text.startswith("no change") for a in moved.layout.annotations)


def test_umap_legend_below_the_plot_one_entry_per_category():
    res = result(same=False, umap=True)
    fig = umap_figure(res.tables["umap"], "category", "coloured by category")
    assert fig.layout.legend.y < 0 and fig.layout.legend.yanchor == "top"  # under the axes, not on the title
    shown = [t.name for t in fig.data if t.showlegend]
    assert sorted(shown) == sorted(CATS)


def test_report_folds_neighbour_tables_and_loads_nothing():
    page = alignment_report(result(same=False))
    nn = page[page.index('id="tbl-neighbors"'):]
    assert "<details><summary>all 12 probes of layer" in nn
    first = re.search(r"<tbody>(.*?)</tbody>", nn).group(1)
    assert first.count("<tr>") == 10
    rets = [float(x) for x in re.findall(r'class="num">([0-9.]+)</td></tr>', first)]
    assert rets == sorted(rets)  # lowest retention first
    assert not re.search(r"<script[^>]+src=", page)


def test_training_curves_html_opens_offline(tmp_path):
    from probelab.train.curves import plot_curves

    out = plot_curves({"run": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]}, ["loss"], tmp_path / "c.html", "t")
    html = out.read_text()
    assert not re.search(r"<script[^>]+src=", html), "curves.html loads plotly from a CDN"
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js inlined


def test_summary_columns_explained_and_not_cut_when_piped():
    from probelab.summary import summary_table

    rows = [{"layer": i, "norm": 123.4, "cos_other": 0.51, "cos_pair": 0.8, "gap": 0.29} for i in range(3)]
    con = Console(width=60, record=True, file=open("/dev/null", "w"))
    con.print(summary_table(rows, "t"))
    text = con.export_text()
    for head in ("cos_other", "cos_pair", "gap"):
        assert head in text and f"{head}:" in text  # header intact and explained in the caption
    con = Console(width=80, record=True, file=open("/dev/null", "w"))
    con.print(result(same=False).summary_table())
    text = con.export_text()
    assert "rel.euclid" in text and "…" not in text.split("alignment score")[0]
    assert "rel.euclid: |B - A| / |A|" in " ".join(text.split())


@pytest.mark.parametrize("same", [True, False])
def test_steering_sweep_figure_ticks(same):
    from probelab.steering_sweep import SweepResult, SweepRow, sweep_figure

    rows = [SweepRow(s, "x", 0.1 * s, None, None, {}, 0.0 if same else 0.01 * s, 10.0, False) for s in (0.0, 1.0)]
    fig = style(sweep_figure(SweepResult("p", 1, "lab", "sae", "how", "x", rows)))
    assert all(fig.layout[k].exponentformat == "none" for k in fig.layout.to_plotly_json() if k.startswith("yaxis"))
    assert any("no target token" in a.text for a in fig.layout.annotations)
