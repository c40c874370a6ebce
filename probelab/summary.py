"""Per-layer summary of a capture: the quick look the demo and ``probelab capture`` print.

For each layer of the ``resid`` stream: mean state norm; mean cosine between the two sentences of
each analogy pair; mean cosine between sentences of *different* pairs (the baseline); and their
gap, which shows at which depth the model starts to tell related sentences from unrelated ones.
"""
from __future__ import annotations

import torch
from rich.table import Table

from .capture import Captures


def layer_summary(caps: Captures, pairs: list[tuple[int, int]] | None = None, stream: str = "resid") -> list[dict]:
    if caps.ragged:
        raise ValueError("layer_summary needs select='last' or 'mean'")
    x = caps.stream(stream)  # [L, N, d]
    unit = torch.nn.functional.normalize(x, dim=-1)
    cos = unit @ unit.transpose(1, 2)  # [L, N, N]
    n = x.shape[1]
    rows = []
    paired = torch.zeros(n, n, dtype=torch.bool)
    for i, j in pairs or []:
        paired[i, j] = paired[j, i] = True
    off = ~torch.eye(n, dtype=torch.bool) & ~paired
    for li, layer in enumerate(caps.layers[stream]):
        row = {"layer": layer, "norm": x[li].norm(dim=-1).mean().item(),
               "cos_other": cos[li][off].mean().item() if off.any() else float("nan")}
        if pairs:
            row["cos_pair"] = cos[li][paired].mean().item()
            row["gap"] = row["cos_pair"] - row["cos_other"]
        rows.append(row)
    return rows


COLUMNS = {
    "norm": "mean L2 norm of the states",
    "cos_other": "mean cosine between sentences of different pairs (the baseline)",
    "cos_pair": "mean cosine between the two sentences of an analogy pair",
    "gap": "cos_pair - cos_other (how far related sentences stand out)",
}


def summary_table(rows: list[dict], title: str) -> Table:
    """A rich table of :func:`layer_summary` rows; its caption says what each column is. Headers are never
    cut (``min_width``), so a piped (80-column) console folds cells instead of printing ``cos_o…``."""
    cols = list(rows[0])
    caption = "; ".join(f"{c}: {COLUMNS[c]}" for c in cols if c in COLUMNS)
    table = Table(title=title, caption=caption, caption_justify="left")
    for c in cols:
        table.add_column(c, justify="right", min_width=len(c), no_wrap=True)
    for r in rows:
        table.add_row(*[str(r[c]) if isinstance(r[c], int) else f"{r[c]:.3f}" for c in cols])
    return table
