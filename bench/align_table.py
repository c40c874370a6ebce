"""The paper's Figure 8 ordering, measured: base vs Control LLM (Lerp+MSE, Lerp) vs full fine-tune.

    flock /tmp/probelab-heavy.lock .venv/bin/python bench/align_table.py --runs runs/cpu-small \
        --out runs/cpu-small/alignment

Reads every ``<runs>/<method>/final`` model folder written by ``training/train_csft.py`` (its
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
ORDER = ["base", "lerp-mse", "lerp", "dlerp", "hybrid", "stack", "partial", "full"]


def expanded_at_init(base: str, like: Path, folder: Path) -> Path:
    """The base model expanded like the Control LLM run ``like`` but untrained (Figure 8a)."""
    from probelab.models import load_model
    from probelab.models.control import ExpansionConfig, expand_model, save_control

    exp = json.loads((like / "config.json").read_text())["expansion"]
    model, tok = load_model(base)
    fields = {k: v for k, v in exp.items() if k in ExpansionConfig.__dataclass_fields__}
    save_control(expand_model(model, ExpansionConfig.from_dict(fields)), folder, tok)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/cpu-small", help="folder holding <method>/final")
    ap.add_argument("--out", default=None, help="where to write the alignment folders (default RUNS/alignment)")
    ap.add_argument("--base", default=None, help="base model (default: from training.json, else smollm2-135m)")
    ap.add_argument("--probes", default="analogies")
    args = ap.parse_args()

    from probelab.analysis import compare, run_alignment
    from probelab.errors import ProbelabError

    runs = Path(args.runs)
    finals = sorted(p for p in runs.glob("*/final") if (p / "config.json").is_file())
    if not finals:
        raise SystemExit(f"no <method>/final model folders under {runs}; train them first (training/train_csft.py)")
    out = Path(args.out) if args.out else runs / "alignment"
    # paper order: Control LLM with a divergence loss, Control LLM without, then the other methods
    ckpts = sorted((describe(f) for f in finals),
                   key=lambda c: (ORDER.index(c["tag"]) if c["tag"] in ORDER else len(ORDER), c["tag"]))
    base = args.base or next((c["base"] for c in ckpts if c["base"]), None) or "smollm2-135m"

    rows, folders = [], []
    r = run_alignment(base, base=base, probes=args.probes, out=out / "base-vs-base", progress=False)
    row = {"checkpoint": "base (no training)", "vs base": r.score, "branches": None}
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
        tag = c["folder"].parent.name
        row = {"checkpoint": f"{c['name']} ({tag})", "branches": None}
        try:
            r = run_alignment(str(c["folder"]), base=base, probes=args.probes, out=out / f"{tag}-vs-base", progress=False)
            row["vs base"] = r.score
            row.update({f"vs base {k}": v for k, v in r.summary["components"].items()})
            folders.append(out / f"{tag}-vs-base")
            if c["control"]:
                r = run_alignment(str(c["folder"]), probes=args.probes, out=out / f"{tag}-branches", progress=False)
                row["branches"] = r.score
                folders.append(out / f"{tag}-branches")
        except ProbelabError as e:  # e.g. stack adds blocks: no layer-by-layer match with the base
            row["note"] = str(e)
        rows.append(row)
    compare(folders, out / "compare")

    cols = ["checkpoint", "vs base", "branches", "vs base direction", "vs base magnitude", "vs base neighbourhood",
            "vs base stability", "note"]
    fmt = lambda v: "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    (out / "alignment_table.md").write_text(
        f"Alignment on the `{args.probes}` probes (base {base}); command:\n\n"
        f"    .venv/bin/python bench/align_table.py --runs {args.runs} --out {out}\n\n{table}\n")
    print(f"\nwrote {out}/alignment_table.md and {out}/compare/compare.html")


if __name__ == "__main__":
    main()
