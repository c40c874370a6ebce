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
        "values, a rough guide with this few seeds; **bold** where p < 0.05):")


def welch_cell(a: list[float], b: list[float], fmt: Callable[[float], str]) -> str:
    """``fmt(mean(a) - mean(b)) (p P)``, bold when p < 0.05; ``–`` with fewer than two values a side."""
    if len(a) < 2 or len(b) < 2:
        return "–"
    from scipy.stats import ttest_ind

    text = fmt(statistics.fmean(a) - statistics.fmean(b))
    if statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0:
        return text  # no spread on either side: the test is undefined
    p = float(ttest_ind(a, b, equal_var=False).pvalue)
    if not math.isfinite(p):
        return text
    text += f" (p {p:.2g})"
    return f"**{text}**" if p < 0.05 else text


def differences_table(values: dict[str, dict[str, list[float]]], columns: list[tuple[str, str, Callable]],
                      label: dict[str, str] | None = None, pairs: list[tuple[str, str]] = PAIRS) -> list[str]:
    """Markdown lines (note, header, one row per pair with ≥2 seeds a side) or ``[]`` when no pair has.

    ``values[method][column key]`` are the per-seed values; ``columns`` are ``(key, title, fmt)``.
    """
    label = label or {}
    rows = []
    for x, y in pairs:
        if x not in values or y not in values:
            continue
        cells = [welch_cell(values[x].get(key, []), values[y].get(key, []), fmt) for key, _, fmt in columns]
        if all(c == "–" for c in cells):
            continue
        rows.append(f"| {label.get(x, x)} | {label.get(y, y)} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [NOTE, "", "| a | b | " + " | ".join(f"Δ {title}" for _, title, _ in columns) + " |",
            "|---|---|" + "---|" * len(columns), *rows]
