"""The paper's Figure 8 ordering, measured: base vs Control LLM (Lerp+MSE, Lerp) vs full fine-tune.

    flock /tmp/probelab-heavy.lock .venv/bin/python bench/align_table.py --runs runs/cpu-small \
        --out runs/cpu-small/alignment
    .venv/bin/python bench/align_table.py --runs runs/csft-seeds     # <method>/seed-N/final: mean ± sd

Reads every ``<runs>/<method>/final`` (or, from training/run_table.py with seeds,
``<runs>/<method>/seed-N/final``) model folder written by the training stack (its
``training.json`` names the method and the base model; a Control LLM folder has an ``expansion``
block in config.json). For each checkpoint it runs the alignment analysis on the ``analogies`` set:

- ``vs base``: the checkpoint's residual stream against the base model's, block by block (every
  method, so the numbers are comparable across methods);
- ``branches``: for a Control LLM, its pretrained vs expanded branch at each merged layer (Figure 8's
  own reading).

The ``base`` row is the base model against itself and, for branches, the base expanded into a
Control LLM at initialisation (both must score 1). Prints a markdown table (also written to
``OUT/alignment_table.md``) and writes every alignment folder plus ``OUT/compare`` (one HTML page).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def describe(final: Path) -> dict:
    cfg = json.loads((final / "config.json").read_text())
    info = {}
    if (final / "training.json").is_file():
        info = json.loads((final / "training.json").read_text())
    exp = cfg.get("expansion")
    tag = final.parent.name
    if exp and exp.get("strategy", "concat") != "concat":
        name = f"{exp['strategy']} ({exp.get('interpolation', '')}, {exp.get('divergence', 'none')})"
    elif exp:
        div = exp.get("divergence", "none")
        alpha = exp.get("alpha", 0)
        name = f"Control LLM {exp.get('interpolation', '?')}{len(exp.get('layers', []))}"
        name += f"-{div.upper()}" if div != "none" and alpha not in (0, 0.0) else " (no divergence loss)"
    else:
        name = "base (train.steps=0)" if tag == "base" else f"{info.get('method', tag)} fine-tune"
    return {"name": name, "method": info.get("method", tag), "base": info.get("base"), "tag": tag,
            "control": bool(exp) and exp.get("strategy", "concat") != "stack", "folder": final}


# the paper's reading order: no training, Control LLM with / without divergence loss, then the rest
ORDER = ["base", "lerp-mse", "lerp-mse-official", "dlerp-mse", "lerp", "dlerp", "dlerp-official", "hybrid", "stack",
         "partial", "full"]


def expanded_at_init(base: str, like: Path, folder: Path) -> Path:
    """The base model expanded like the Control LLM run ``like`` but untrained (Figure 8a)."""
    from probelab.models import load_model
    from probelab.models.control import ExpansionConfig, expand_model, save_control

    exp = json.loads((like / "config.json").read_text())["expansion"]
    model, tok = load_model(base)
    fields = {k: v for k, v in exp.items() if k in ExpansionConfig.__dataclass_fields__}
    save_control(expand_model(model, ExpansionConfig.from_dict(fields)), folder, tok)
    return folder


def find_finals(runs: Path) -> list[tuple[Path, int | None]]:
    """``(final folder, seed)`` for every ``<method>/final`` (one run) and ``<method>/seed-N/final``."""
    found = [(p, None) for p in runs.glob("*/final") if (p / "config.json").is_file()]
    for p in runs.glob("*/seed-*/final"):
        seed = p.parent.name.split("-", 1)[1]
        if (p / "config.json").is_file() and seed.isdigit():
            found.append((p, int(seed)))
    return sorted(found, key=lambda x: (str(x[0]), -1 if x[1] is None else x[1]))


def method_of(final: Path, seed: int | None) -> str:
    return (final.parent.parent if seed is not None else final.parent).name


def mean_sd(values: list[float]) -> str:
    import statistics

    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/cpu-small", help="folder holding <method>/final or <method>/seed-N/final")
    ap.add_argument("--out", default=None, help="where to write the alignment folders (default RUNS/alignment)")
    ap.add_argument("--base", default=None, help="base model (default: from training.json, else smollm2-135m)")
    ap.add_argument("--probes", default="analogies")
    args = ap.parse_args()

    from probelab.analysis import compare, run_alignment
    from probelab.errors import ProbelabError
    from probelab.paths import atomic_write_text
    from probelab.train.seed_stats import differences_table, per_seed

    runs = Path(args.runs)
    finals = find_finals(runs)
    if not finals:
        raise SystemExit(f"no <method>/final or <method>/seed-N/final model folders under {runs}; train them first")
    out = Path(args.out) if args.out else runs / "alignment"
    ckpts = [{**describe(f), "tag": method_of(f, seed), "seed": seed} for f, seed in finals]
    ckpts.sort(key=lambda c: (ORDER.index(c["tag"]) if c["tag"] in ORDER else len(ORDER), c["tag"],
                              -1 if c["seed"] is None else c["seed"]))
    base = args.base or next((c["base"] for c in ckpts if c["base"]), None) or "smollm2-135m"

    rows, folders = [], []
    r = run_alignment(base, base=base, probes=args.probes, out=out / "base-vs-base", progress=False)
    row = {"checkpoint": "base (no training)", "tag": "base", "vs base": r.score, "branches": None}
    folders.append(out / "base-vs-base")
    control_like = next((c["folder"] for c in ckpts if c["control"] and c["tag"] == "lerp-mse"), None) or \
        next((c["folder"] for c in ckpts if c["control"]), None)
    if control_like is not None:
        init = expanded_at_init(base, control_like, out / "_expanded-at-init")
        r = run_alignment(str(init), probes=args.probes, out=out / "expanded-at-init", progress=False)
        row["branches"] = r.score
        folders.insert(0, out / "expanded-at-init")
    rows.append(row)
    for c in ckpts:
        tag = c["tag"] if c["seed"] is None else f"{c['tag']}-seed-{c['seed']}"
        row = {"checkpoint": f"{c['name']} ({c['tag']})", "tag": c["tag"], "seed": c["seed"], "branches": None}
        try:
            r = run_alignment(str(c["folder"]), base=base, probes=args.probes, out=out / f"{tag}-vs-base", progress=False)
            row["vs base"] = r.score
            row.update({f"vs base {k}": v for k, v in r.summary["components"].items()})
            if c["seed"] in (None, 0):
                folders.append(out / f"{tag}-vs-base")
            if c["control"]:
                r = run_alignment(str(c["folder"]), probes=args.probes, out=out / f"{tag}-branches", progress=False)
                row["branches"] = r.score
                if c["seed"] in (None, 0):
                    folders.append(out / f"{tag}-branches")
        except ProbelabError as e:  # e.g. stack adds blocks: no layer-by-layer match with the base
            row["note"] = str(e)
        print(f"{row['checkpoint']} seed {c['seed']}: vs base {row.get('vs base')}, branches {row['branches']}", flush=True)
        rows.append(row)
    compare(folders, out / "compare")

    cols = ["vs base", "branches", "vs base direction", "vs base magnitude", "vs base neighbourhood", "vs base stability"]
    seeds = sorted({r.get("seed") for r in rows if r.get("seed") is not None})
    lines = ["| checkpoint | runs | " + " | ".join(cols) + " | note |", "|---|---:|" + "---|" * (len(cols) + 1)]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["checkpoint"], []).append(r)
    for name, rs in groups.items():
        cells = [mean_sd([r[c] for r in rs if isinstance(r.get(c), float)]) for c in cols]
        note = next((r["note"] for r in rs if r.get("note")), "-")
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + f" | {note} |")
    fmt = lambda d: f"{d:+.4f}"  # noqa: E731
    diffs = differences_table(per_seed(rows, "tag", ("vs base", "branches")), [("vs base", "vs base", fmt), ("branches", "branches", fmt)],
                              {r["tag"]: r["checkpoint"] for r in rows})
    if diffs:
        lines += ["", *diffs]
    table = "\n".join(lines)
    print(table)
    spread = f" (mean ± sd over seeds {', '.join(map(str, seeds))})" if len(seeds) > 1 else ""
    atomic_write_text(out / "alignment_table.md",
                      f"Alignment on the `{args.probes}` probes (base {base}){spread}; command:\n\n"
                      f"    .venv/bin/python bench/align_table.py --runs {args.runs} --out {out}\n\n{table}\n")
    print(f"\nwrote {out}/alignment_table.md and {out}/compare/compare.html")


if __name__ == "__main__":
    main()
