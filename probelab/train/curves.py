"""Metric logs (JSONL, appended as training goes, mirrored to CSV) and their plots (plotly HTML)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ..paths import atomic_write_text


class MetricLog:
    """Append-only JSONL of dict rows; on resume, rows after the restored step are dropped."""

    def __init__(self, path: Path, truncate_after_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is not None and self.path.exists():
            rows = [r for r in read_jsonl(self.path) if r.get("step", 0) <= truncate_after_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        elif truncate_after_step is None and self.path.exists():
            self.path.unlink()

    def write(self, row: dict) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def to_csv(self) -> Path:
        rows = read_jsonl(self.path)
        out = self.path.with_suffix(".csv")
        keys = list(dict.fromkeys(k for r in rows for k in r))
        lines = []

        class _Sink:
            def write(self, s):
                lines.append(s)

        w = csv.DictWriter(_Sink(), fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(out, "".join(lines))
        return out


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything before it is valid
    return rows


def plot_curves(series: dict[str, list[dict]], keys: list[str], out: Path, title: str,
                x: str = "step") -> Path:
    """One subplot per metric in ``keys``, one line per named series; written as standalone HTML that
    opens offline (plotly.js inlined, like every probelab report)."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    keys = [k for k in keys if any(k in r for rows in series.values() for r in rows)]
    fig = make_subplots(rows=len(keys) or 1, cols=1, shared_xaxes=True, subplot_titles=keys)
    for i, key in enumerate(keys, start=1):
        for name, rows in series.items():
            pts = [(r[x], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=name,
                                         legendgroup=name, showlegend=i == 1, mode="lines+markers" if len(pts) < 30 else "lines"),
                              row=i, col=1)
    fig.update_layout(title=title, height=260 * max(len(keys), 1) + 80)
    fig.update_xaxes(title_text=x, row=len(keys) or 1, col=1)
    html = fig.to_html(include_plotlyjs=True, full_html=True)
    atomic_write_text(out, html)
    return Path(out)
