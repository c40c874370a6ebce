"""Collect the runs of training/run_table.sh into training/results/<name>.{csv,md} and curve plots.

    python training/make_table.py --root runs/cpu-small --out training/results
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import subprocess
import time
from pathlib import Path

from probelab.paths import atomic_write_text
from probelab.train.curves import plot_curves, read_jsonl

LABELS = {  # run folder -> row label, in table order
    "full": "Full fine-tune",
    "partial": "Partial FT (6 of 30 blocks)",
    "stack": "Stack (LLaMA-Pro, 6 blocks)",
    "hybrid": "Hybrid (stack + Lerp/MSE, 6)",
    "lerp-mse": "Control LLM Lerp6 + MSE",
    "lerp": "Control LLM Lerp6, no divergence",
    "dlerp": "Control LLM Dlerp6, no divergence",
}
METRICS = [("skill_acc", "add3 acc"), ("wiki_ppl", "wiki ppl"), ("wiki_mc_acc", "wiki-MC acc"), ("mmlu_acc", "MMLU acc")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="runs/cpu-small")
    ap.add_argument("--out", default="training/results")
    ap.add_argument("--name", default="cpu-small", help="output file prefix (and the config named in the text)")
    args = ap.parse_args()
    root, out = Path(args.root), Path(args.out)
    base_rows = read_jsonl(root / "base" / "evals.jsonl")
    if not base_rows:
        raise SystemExit(f"error: {root}/base/evals.jsonl is missing: run training/run_table.sh base")
    base = base_rows[0]
    rows, curves, losses = [], {"base": [base]}, {}
    for name, label in LABELS.items():
        summary_file = root / name / "summary.json"
        if not summary_file.is_file():
            continue
        summary = json.loads(summary_file.read_text())
        ev = read_jsonl(root / name / "evals.jsonl")
        final = ev[-1]
        row = {"method": label, "run": name, "steps": summary["steps"],
               "trainable_params": summary["trainable_params"], "train_seconds": summary["seconds"],
               "train_tok_per_s": summary["tokens_per_second"]}
        for key, _ in METRICS:
            row[f"{key}_before"] = base.get(key)
            row[f"{key}_after"] = final.get(key)
        row["wiki_ppl_change_pct"] = round(100 * (final["wiki_ppl"] / base["wiki_ppl"] - 1), 2)
        rows.append(row)
        curves[name] = [{**base, "step": 0}] + ev
        losses[name] = read_jsonl(root / name / "metrics.jsonl")

    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / f"{args.name}.csv", buf.getvalue())
    plot_curves({k: v for k, v in curves.items() if k != "base"}, [k for k, _ in METRICS], out / f"{args.name}-evals.html",
                "SmolLM2-135M continual SFT on add3: new skill and retention vs step")
    plot_curves(losses, ["ce_loss", "divergence_loss"], out / f"{args.name}-loss.html", "training loss per step")
    atomic_write_text(out / f"{args.name}.md", render(rows, base, root, args.name))
    print((out / f"{args.name}.md").read_text())


def fmt(v, pct=False):
    if v is None:
        return "–"
    return f"{100 * v:.1f}%" if pct else f"{v:.2f}"


def render(rows: list[dict], base: dict, root: Path, name: str = "cpu-small") -> str:
    cfg = json.loads((root / "full" / "config.json").read_text()) if (root / "full" / "config.json").is_file() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Continual SFT on CPU: learning a new skill vs forgetting (SmolLM2-135M-Instruct)",
        "",
        f"Made by `{'' if name == 'cpu-small' else f'CFG=training/configs/{name}.yaml ROOT=runs/{name} NAME={name} '}"
        f"bash training/run_table.sh` (config `training/configs/{name}.yaml`, code at {commit}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {platform.machine()} CPU, 2 threads).",
        "",
        f"New skill: 3-digit addition (`add3`), {cfg.get('train', {}).get('steps', '?')} optimizer steps x "
        f"{cfg.get('train', {}).get('micro_batch', '?')} examples for every method, same order, AdamW "
        f"lr {cfg.get('train', {}).get('lr', '?')} (cosine), bf16 autocast. Evaluated on held-out problems "
        f"(exact answer, greedy). Retention: perplexity on {cfg.get('eval', {}).get('wiki_n', '?')} held-out "
        f"Wikipedia intros (first {cfg.get('eval', {}).get('wiki_max_len', '?')} tokens; lower is better), "
        f"Wikipedia short-description multiple choice (wiki-MC, {cfg.get('eval', {}).get('wiki_mc_n', '?')} items, "
        f"cloze log-likelihood per character), MMLU ({cfg.get('eval', {}).get('mmlu_n', '?')} items with at most "
        f"{cfg.get('eval', {}).get('mmlu_max_chars', '?')} characters, {cfg.get('eval', {}).get('mmlu_format', '?')} format). Chance for both multiple-choice "
        "sets is 25%. Skill accuracy is over "
        f"{cfg.get('eval', {}).get('skill_n', '?')} held-out problems.",
        "",
        "| method | trainable | train s | add3 acc (base → after) | wiki ppl (base → after) | wiki-MC acc | MMLU acc |",
        "|---|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['trainable_params'] / 1e6:.1f}M | {r['train_seconds']:.0f} | "
            f"{fmt(r['skill_acc_before'], True)} → **{fmt(r['skill_acc_after'], True)}** | "
            f"{fmt(r['wiki_ppl_before'])} → **{fmt(r['wiki_ppl_after'])}** ({r['wiki_ppl_change_pct']:+.1f}%) | "
            f"{fmt(r['wiki_mc_acc_before'], True)} → {fmt(r['wiki_mc_acc_after'], True)} | "
            f"{fmt(r['mmlu_acc_before'], True)} → {fmt(r['mmlu_acc_after'], True)} |")
    lines += ["", "Curves (evaluations at every `eval.every` steps, training loss per step): "
              f"`{name}-evals.html`, `{name}-loss.html`. Raw numbers: `{name}.csv`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
