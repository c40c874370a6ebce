"""Collect the runs of training/run_table.py into training/results/<name>.{csv,md} and curve plots.

    python training/make_table.py --root runs/cpu-small --out training/results

Each method's runs are ``<root>/<method>/seed-N/`` (one per seed; the former single-run layout
``<root>/<method>/`` is read too). With several seeds every cell is mean ± sample standard deviation,
each method's "before" numbers come from the base run of the same seed (the evaluation samples
depend on the seed), and ``<name>-seeds.csv`` has one row per seed.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import time
from pathlib import Path

from probelab.paths import atomic_write_text
from probelab.train.provenance import PRECISION, git_commit, machine
from probelab.train.curves import plot_curves, read_jsonl

LABELS = {  # run folder -> row label, in table order
    "full": "Full fine-tune",
    "partial": "Partial FT (6 of 30 blocks)",
    "stack": "Stack (LLaMA-Pro, 6 blocks)",
    "hybrid": "Hybrid (stack + Lerp/MSE, 6)",
    "lerp-mse": "Control LLM Lerp6 + MSE",
    "lerp": "Control LLM Lerp6, no divergence",
    "dlerp": "Control LLM Dlerp6, no divergence",
    "dlerp-mse": "Control LLM Dlerp6 + MSE",
    "lerp-mse-official": "Control LLM Lerp6 + MSE, official preset",
    "dlerp-official": "Control LLM Dlerp6, no divergence, official preset",
}
METRICS = [("skill_acc", "add3 acc"), ("wiki_ppl", "wiki ppl"), ("wiki_mc_acc", "wiki-MC acc"), ("mmlu_acc", "MMLU acc")]


def runs_of(folder: Path) -> list[tuple[int | None, Path]]:
    """The runs of one method: ``folder/seed-N/`` for each seed (training/run_table.py), or ``folder``
    itself (one run, the layout before seeds)."""
    seeds = sorted((int(p.name.split("-", 1)[1]), p) for p in folder.glob("seed-*")
                   if p.is_dir() and p.name.split("-", 1)[1].isdigit())
    if seeds:
        return seeds
    return [(None, folder)] if folder.is_dir() else []


def mean_sd(values: list) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None with fewer than 2 values)."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="runs/cpu-small")
    ap.add_argument("--out", default="training/results")
    ap.add_argument("--name", default="cpu-small", help="output file prefix")
    ap.add_argument("--config", help="the config the runs used (named in the text; default: training/configs/<name>.yaml)")
    ap.add_argument("--command", help="the command that made the runs (default: a run_table.py line from the arguments)")
    ap.add_argument("--duration-min", type=float, help="how long the runs took (minutes), for the header")
    args = ap.parse_args()
    root, out = Path(args.root), Path(args.out)
    bases = {}
    for seed, folder in runs_of(root / "base"):
        ev = read_jsonl(folder / "evals.jsonl")
        if ev:
            bases[seed] = ev[0]
    if not bases:
        raise SystemExit(f"error: {root}/base has no evals.jsonl: run training/run_table.py (the base rows come first)")
    rows, seed_rows, curves, losses = [], [], {}, {}
    for name, label in LABELS.items():
        per_seed = []
        for seed, folder in runs_of(root / name):
            if not (folder / "summary.json").is_file() or seed not in bases:
                continue
            summary = json.loads((folder / "summary.json").read_text())
            ev = read_jsonl(folder / "evals.jsonl")
            base, final = bases[seed], ev[-1]
            r = {"method": label, "run": name, "seed": seed, "steps": summary["steps"],
                 "trainable_params": summary["trainable_params"], "train_seconds": summary["seconds"],
                 "train_tok_per_s": summary["tokens_per_second"]}
            for key, _ in METRICS:
                r[f"{key}_before"] = base.get(key)
                r[f"{key}_after"] = final.get(key)
            r["wiki_ppl_change_pct"] = (round(100 * (final["wiki_ppl"] / base["wiki_ppl"] - 1), 2)
                                        if final.get("wiki_ppl") and base.get("wiki_ppl") else None)  # eval.wiki_n=0: none
            per_seed.append(r)
            tag = name if seed is None else f"{name} seed {seed}"
            curves[tag] = [{**base, "step": 0}] + ev
            losses[tag] = read_jsonl(folder / "metrics.jsonl")
        if not per_seed:
            continue
        seed_rows += per_seed
        row = {k: per_seed[0][k] for k in ("method", "run", "steps", "trainable_params")}
        row["seeds"] = len(per_seed)
        for key in ("train_seconds", "train_tok_per_s", *[f"{k}_{w}" for k, _ in METRICS for w in ("before", "after")],
                    "wiki_ppl_change_pct"):
            m, sd = mean_sd([r[key] for r in per_seed])
            row[key], row[f"{key}_sd"] = m, sd
        rows.append(row)
    if not rows:
        raise SystemExit(f"error: no finished method runs under {root}")

    out.mkdir(parents=True, exist_ok=True)
    for path, table in ((out / f"{args.name}.csv", rows), (out / f"{args.name}-seeds.csv", seed_rows)):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in table for k in r)))
        w.writeheader()
        w.writerows(table)
        atomic_write_text(path, buf.getvalue())
    plot_curves(curves, [k for k, _ in METRICS], out / f"{args.name}-evals.html",
                "SmolLM2-135M continual SFT on add3: new skill and retention vs step")
    plot_curves(losses, ["ce_loss", "divergence_loss"], out / f"{args.name}-loss.html", "training loss per step")
    first = runs_of(root / "full")[:1] or runs_of(root / rows[0]["run"])[:1]
    cfg_file = first[0][1] / "config.json" if first else None
    atomic_write_text(out / f"{args.name}.md", render(rows, root, args.name, cfg_file, args.config, sorted(bases, key=str),
                                                      args.command, args.duration_min, seed_rows))
    print((out / f"{args.name}.md").read_text())


def fmt(v, pct=False, sd=None):
    """``v`` (a fraction as a percentage with ``pct``), ``± sd`` when several seeds give one."""
    if v is None:
        return "–"
    text = f"{100 * v:.1f}%" if pct else f"{v:.2f}"
    if sd is not None:
        text += f" ± {100 * sd:.1f}" if pct else f" ± {sd:.2f}"
    return text


SPREAD = [("skill_acc_after", "add3 acc", True), ("wiki_ppl_change_pct", "wiki ppl change", False)]


def spread_section(seed_rows: list[dict]) -> list[str]:
    """Which differences between methods exceed the seed spread (:mod:`probelab.train.seed_stats`)."""
    from probelab.train.seed_stats import differences_table, per_seed

    values = per_seed(seed_rows, "run", [key for key, _, _ in SPREAD])
    columns = [(key, name, (lambda d: f"{100 * d:+.1f} points") if pct else (lambda d: f"{d:+.2f} pp"))
               for key, name, pct in SPREAD]
    return differences_table(values, columns, {r["run"]: r["method"] for r in seed_rows})


def render(rows: list[dict], root: Path, name: str = "cpu-small", cfg_file: Path | None = None,
           config: str | None = None, seeds: list | None = None, command: str | None = None,
           duration_min: float | None = None, seed_rows: list[dict] | None = None) -> str:
    cfg = json.loads(cfg_file.read_text()) if cfg_file and cfg_file.is_file() else {}
    commit = git_commit()
    seeds = [s for s in (seeds or []) if s is not None]
    several = len(seeds) > 1
    command = command or (f"python training/run_table.py --config {config or name} --name {name} --root {root}"
                          + (f" --seeds {' '.join(map(str, seeds))}" if seeds else ""))
    took = f", {duration_min:.0f} min" if duration_min else ""
    precision = PRECISION.get(str(cfg.get("train", {}).get("precision", "?")), str(cfg.get("train", {}).get("precision")))
    lines = [
        "# Continual SFT on CPU: learning a new skill vs forgetting (SmolLM2-135M-Instruct)",
        "",
        f"Made by `{command}` (config `{config or f'training/configs/{name}.yaml'}`, code at {commit}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {machine()}{took}).",
        "",
        f"New skill: 3-digit addition (`add3`), {cfg.get('train', {}).get('steps', '?')} optimizer steps x "
        f"{cfg.get('train', {}).get('micro_batch', '?')} examples for every method, same order, AdamW "
        f"lr {cfg.get('train', {}).get('lr', '?')} (cosine), {precision}. Evaluated on held-out problems "
        f"(exact answer, greedy). Retention: perplexity on {cfg.get('eval', {}).get('wiki_n', '?')} held-out "
        f"Wikipedia intros (first {cfg.get('eval', {}).get('wiki_max_len', '?')} tokens; lower is better), "
        f"Wikipedia short-description multiple choice (wiki-MC, {cfg.get('eval', {}).get('wiki_mc_n', '?')} items, "
        f"cloze log-likelihood per character), MMLU ({cfg.get('eval', {}).get('mmlu_n', '?')} items with at most "
        f"{cfg.get('eval', {}).get('mmlu_max_chars', '?')} characters, {cfg.get('eval', {}).get('mmlu_format', '?')} format). Chance for both multiple-choice "
        "sets is 25%. Skill accuracy is over "
        f"{cfg.get('eval', {}).get('skill_n', '?')} held-out problems."
        + (f" Seeds {', '.join(map(str, seeds))} (data order, evaluation samples and initialisation): "
           "every cell is the mean ± the sample standard deviation over the seeds." if several else ""),
        "",
        "| method | trainable | train s | add3 acc (base → after) | wiki ppl (base → after) | wiki-MC acc | MMLU acc |",
        "|---|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        sd = (lambda key: r.get(f"{key}_sd")) if several else (lambda key: None)
        change = "–" if r["wiki_ppl_change_pct"] is None else (
            f"{r['wiki_ppl_change_pct']:+.1f}%" + (f" ± {sd('wiki_ppl_change_pct'):.1f}" if sd("wiki_ppl_change_pct") is not None else ""))
        lines.append(
            f"| {r['method']} | {r['trainable_params'] / 1e6:.1f}M | {r['train_seconds']:.0f} | "
            f"{fmt(r['skill_acc_before'], True, sd('skill_acc_before'))} → **{fmt(r['skill_acc_after'], True, sd('skill_acc_after'))}** | "
            f"{fmt(r['wiki_ppl_before'], sd=sd('wiki_ppl_before'))} → **{fmt(r['wiki_ppl_after'], sd=sd('wiki_ppl_after'))}** ({change}) | "
            f"{fmt(r['wiki_mc_acc_before'], True, sd('wiki_mc_acc_before'))} → {fmt(r['wiki_mc_acc_after'], True, sd('wiki_mc_acc_after'))} | "
            f"{fmt(r['mmlu_acc_before'], True, sd('mmlu_acc_before'))} → {fmt(r['mmlu_acc_after'], True, sd('mmlu_acc_after'))} |")
    if several and seed_rows:
        lines += ["", *spread_section(seed_rows)]
    lines += ["", "Curves (evaluations at every `eval.every` steps, training loss per step): "
              f"`{name}-evals.html`, `{name}-loss.html`. Raw numbers: `{name}.csv` (means, `_sd` columns)"
              + (f", `{name}-seeds.csv` (one row per seed)" if several else "") + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
