"""Is one method's number different from another's beyond the spread over seeds?

Results tables with several seeds per method compare pairs of methods by the difference of their
means and Welch's t-test on the per-seed values (unequal variances). With three seeds a p-value is a
rough guide, not a verdict; the tables say so.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable

# (a, b): the comparisons the Control LLM tables make (run-folder names of training/run_table.py)
PAIRS = [
    ("full", "lerp-mse"), ("lerp", "lerp-mse"), ("dlerp", "lerp"), ("dlerp-mse", "lerp-mse"),
    ("lerp-mse-official", "lerp-mse"), ("dlerp-official", "dlerp"), ("partial", "lerp-mse"),
    ("stack", "lerp-mse"), ("hybrid", "lerp-mse"),
]
NOTE = ("Differences between methods (a - b, means over the seeds; p: Welch's t-test on the per-seed "
        "values, or the paired t-test where a column says paired, a rough guide with this few seeds; "
        "**bold** where p < 0.05):")


def per_seed(rows: list[dict], group: str, keys) -> dict[str, dict[str, list[float]]]:
    """``{row[group]: {key: [value per seed, in seed order]}}`` over the rows that have a seed, keeping
    only numeric values (a metric a run did not measure is left out): what :func:`differences_table` reads."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in sorted((r for r in rows if r.get("seed") is not None), key=lambda r: r["seed"]):
        for key in keys:
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(r[group], {}).setdefault(key, []).append(float(v))
    return out


def welch_cell(a: list[float], b: list[float], fmt: Callable[[float], str], paired: bool = False) -> str:
    """``fmt(mean(a) - mean(b)) (p P)``, bold when p < 0.05; ``–`` with fewer than two values a side.

    ``paired``: ``a[i]`` and ``b[i]`` come from the same seed (same data order), so the test is the
    paired t-test on the per-seed differences (``–`` unless both sides have the same number of seeds).
    """
    if len(a) < 2 or len(b) < 2 or (paired and len(a) != len(b)):
        return "–"
    from scipy.stats import ttest_ind, ttest_rel

    text = fmt(statistics.fmean(a) - statistics.fmean(b))
    spread = statistics.pstdev([x - y for x, y in zip(a, b)]) if paired else statistics.pstdev(a) + statistics.pstdev(b)
    if spread == 0:
        return text  # no spread: the test is undefined
    p = float((ttest_rel(a, b) if paired else ttest_ind(a, b, equal_var=False)).pvalue)
    if not math.isfinite(p):
        return text
    text += f" (p {p:.2g})"
    return f"**{text}**" if p < 0.05 else text


def differences_table(values: dict[str, dict[str, list[float]]], columns: list[tuple[str, str, Callable]],
                      label: dict[str, str] | None = None, pairs: list[tuple[str, str]] = PAIRS) -> list[str]:
    """Markdown lines (note, header, one row per pair with ≥2 seeds a side) or ``[]`` when no pair has.

    ``values[method][column key]`` are the per-seed values (in seed order); ``columns`` are
    ``(key, title, fmt)`` or ``(key, title, fmt, "paired")`` for a paired test (see :func:`welch_cell`).
    """
    label = label or {}
    rows = []
    for x, y in pairs:
        if x not in values or y not in values:
            continue
        cells = [welch_cell(values[x].get(c[0], []), values[y].get(c[0], []), c[2], paired=c[3:] == ("paired",))
                 for c in columns]
        if all(c == "–" for c in cells):
            continue
        rows.append(f"| {label.get(x, x)} | {label.get(y, y)} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [NOTE, "", "| a | b | " + " | ".join(f"Δ {c[1]}" for c in columns) + " |",
            "|---|---|" + "---|" * len(columns), *rows]
