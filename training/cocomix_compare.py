"""Compare a CoCoMix run with its NTP baseline: validation perplexity over tokens seen (paper Fig. 2).

    python training/cocomix_compare.py runs/cocomix_cpu/cocomix runs/cocomix_cpu/ntp \
        --csv training/results/cocomix_cpu.csv

Writes one CSV row per evaluation point (tokens seen, both perplexities) and prints a Markdown
table plus the token-efficiency summary the paper reports: how many tokens the NTP baseline needs
to reach CoCoMix's final perplexity (linear interpolation between evaluations), and the
compression-weight statistics of the CoCoMix run (paper Fig. 6c).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def val_curve(run: Path) -> list[tuple[int, float]]:
    """(tokens seen, validation perplexity) per evaluation: ``evals.jsonl`` of the training stack, or
    the ``metrics.csv`` of runs made before it."""
    if (run / "evals.jsonl").is_file():
        rows = [json.loads(ln) for ln in (run / "evals.jsonl").read_text().splitlines() if ln.strip()]
        return [(int(r["tokens"]), float(r["val_ppl"])) for r in rows if r.get("val_ppl") is not None]
    rows = csv.DictReader((run / "metrics.csv").open())
    return [(int(r["tokens"]), float(r["val_ppl"])) for r in rows if r.get("val_ppl")]


def tokens_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """First (interpolated) token count at which ``curve`` gets down to ``target``; None if never."""
    for (t0, p0), (t1, p1) in zip(curve, curve[1:]):
        if p1 <= target:
            if p0 <= target:
                return float(t0)
            return t0 + (t1 - t0) * (p0 - target) / (p0 - p1)
    return None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cocomix", type=Path)
    p.add_argument("ntp", type=Path)
    p.add_argument("--csv", type=Path, required=True)
    args = p.parse_args()
    cc, ntp = dict(val_curve(args.cocomix)), dict(val_curve(args.ntp))
    tokens = sorted(set(cc) | set(ntp))
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tokens_seen", "ntp_val_ppl", "cocomix_val_ppl"])
        for t in tokens:
            w.writerow([t, ntp.get(t, ""), cc.get(t, "")])
    print("| tokens seen | NTP val ppl | CoCoMix val ppl |\n|---:|---:|---:|")
    for t in tokens:
        print(f"| {t:,} | {ntp.get(t, float('nan')):.2f} | {cc.get(t, float('nan')):.2f} |")
    cc_curve, ntp_curve = sorted(cc.items()), sorted(ntp.items())
    best_cc, best_ntp = min(cc.values()), min(ntp.values())
    print(f"\nbest val ppl: CoCoMix {best_cc:.2f}, NTP {best_ntp:.2f}")
    final_cc, final_ntp = cc_curve[-1][1], ntp_curve[-1][1]
    print(f"final val ppl: CoCoMix {final_cc:.2f}, NTP {final_ntp:.2f} "
          f"({100 * (final_cc - final_ntp) / final_ntp:+.1f}% for CoCoMix)")
    for name, curve, other, target in (("NTP", ntp_curve, "CoCoMix", best_cc), ("CoCoMix", cc_curve, "NTP", best_ntp)):
        t = tokens_to_reach(curve, target)
        if t is None:
            print(f"{name} never reaches {other}'s best ppl {target:.2f} within the budget")
        else:
            print(f"{name} reaches {other}'s best ppl {target:.2f} after {t:,.0f} tokens")
    for run in (args.cocomix, args.ntp):
        s = json.loads((run / "summary.json").read_text())
        print(f"{s['mode']}: {s['parameters'] / 1e6:.2f}M parameters, hidden {s['hidden_size']}, "
              f"{s['train_seconds']:.0f}s" + (f", compression {s['compression']}" if s["compression"] else ""))


if __name__ == "__main__":
    main()
