"""probelab.train.seed_stats: differences beyond the seed spread, checked against scipy directly."""
from __future__ import annotations

import statistics

from scipy.stats import ttest_ind

from probelab.train.seed_stats import NOTE, differences_table, welch_cell


def test_welch_cell_matches_scipy_and_bolds_below_005():
    a, b = [0.61, 0.58, 0.64], [0.70, 0.72, 0.69]
    p = ttest_ind(a, b, equal_var=False).pvalue
    cell = welch_cell(a, b, lambda d: f"{d:+.3f}")
    assert cell == f"**{statistics.fmean(a) - statistics.fmean(b):+.3f} (p {p:.2g})**" and p < 0.05
    noisy = welch_cell([0.1, 0.9, 0.5], [0.4, 0.6, 0.2], lambda d: f"{d:+.2f}")
    assert not noisy.startswith("**") and "(p " in noisy
    assert welch_cell([0.5], [0.4, 0.6], str) == "–"  # one seed: no spread to compare with
    assert welch_cell([1.0, 1.0], [1.0, 1.0], lambda d: f"{d:+.1f}") == "+0.0"  # zero variance: p undefined


def test_differences_table_keeps_pairs_with_seeds_on_both_sides():
    values = {"lerp": {"x": [1.0, 1.2, 1.1]}, "lerp-mse": {"x": [0.5, 0.6, 0.55]}, "dlerp": {"x": [2.0]}}
    lines = differences_table(values, [("x", "score", lambda d: f"{d:+.2f}")], {"lerp": "Lerp", "lerp-mse": "Lerp+MSE"})
    assert lines[0] == NOTE and lines[2] == "| a | b | Δ score |"
    assert len(lines) == 5 and lines[4].startswith("| Lerp | Lerp+MSE | **+0.55 (p ")  # dlerp vs lerp: one seed, left out
    assert differences_table({"lerp": {"x": [1.0]}}, [("x", "score", str)]) == []


def test_paired_cell_uses_the_per_seed_differences():
    from scipy.stats import ttest_rel

    a, b = [80.2, 70.4, 83.0], [66.9, 65.0, 70.2]  # a shared seed effect hides the gap from Welch
    p = ttest_rel(a, b).pvalue
    assert welch_cell(a, b, lambda d: f"{d:+.1f}", paired=True) == f"+10.5 (p {p:.2g})"
    assert welch_cell(a, b[:2] + [1.0, 2.0], str, paired=True) == "–"  # unequal seeds cannot pair
    lines = differences_table({"x": {"v": a}, "y": {"v": b}}, [("v", "v", str), ("v", "v paired", lambda d: f"{d:.1f}", "paired")],
                              pairs=[("x", "y")])
    assert lines[2] == "| a | b | Δ v | Δ v paired |" and lines[4].endswith(f"| 10.5 (p {p:.2g}) |")


def test_per_seed_groups_in_seed_order_and_skips_missing_values():
    from probelab.train.seed_stats import per_seed

    rows = [{"m": "a", "seed": 2, "x": 3.0}, {"m": "a", "seed": 0, "x": 1.0, "y": None},
            {"m": "b", "seed": 1, "x": 5.0, "y": 0.5}, {"m": "base", "seed": None, "x": 9.0}]
    assert per_seed(rows, "m", ["x", "y"]) == {"a": {"x": [1.0, 3.0]}, "b": {"x": [5.0], "y": [0.5]}}
