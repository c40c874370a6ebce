"""Run the CoCoMix vs next-token-prediction comparison over seeds and collect its table.

    python training/cocomix_table.py --sae ~/.cache/probelab/saes/smollm2-135m-l13-topk --seeds 0 1 2
    python training/cocomix_table.py --sae PATH --methods ntp cocomix --seeds 0 --dry-run

Methods (one run folder ``ROOT/METHOD/seed-S`` each, run by ``python -m probelab.train.cocomix``):
``ntp`` (the width-matched baseline), ``cocomix`` (labels: top latents by attribution, the paper) and
``cocomix-activation`` (labels: top latents by SAE activation, the paper's Fig. 6a ablation). The
labelled runs share one teacher pass (the label cache holds both selections), so ``cocomix`` goes
first. The script refuses to start unless ``--sae`` is an SAE folder trained by probelab (it holds its
held-out quality): the results file names that SAE by path, weight hash, explained variance, L0 and
dead fraction, so a table can never silently come from another SAE. Runs that finished are skipped
and an interrupted one resumes (the training stack's run-folder rules). Writes
``RESULTS/NAME.md``, ``NAME.csv`` (per run) and ``NAME-curves.html``.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = {  # run folder -> the keys that make the method (everything else from the config)
    "cocomix": ["method.name=cocomix", "teacher.select=attribution"],
    "cocomix-activation": ["method.name=cocomix", "teacher.select=activation"],
    "ntp": ["method.name=ntp"],
}
PAIRS = [("cocomix", "ntp"), ("cocomix-activation", "ntp"), ("cocomix-activation", "cocomix")]  # (a, b): a - b
LABELS = {"ntp": "NTP (width-matched)", "cocomix": "CoCoMix (attribution labels)",
          "cocomix-activation": "CoCoMix (activation labels, Fig. 6a)"}


def sae_identity(folder: Path) -> dict:
    """Path, weight hash and held-out quality of a probelab-trained SAE; SystemExit when it is not one."""
    from probelab.sae.train import read_meta

    weights = folder / "sae_weights.safetensors"
    if not (folder / "cfg.json").is_file() or not weights.is_file():
        raise SystemExit(f"error: {folder} is not an SAE folder (cfg.json and sae_weights.safetensors); "
                         "train one with `probelab sae train --out DIR` first")
    meta = read_meta(folder)
    if not meta.get("heldout_quality"):
        raise SystemExit(f"error: {folder} has no held-out quality (not trained by probelab sae train); "
                         "the results must name the SAE's EV, L0 and dead fraction")
    q = meta["heldout_quality"]
    cfg = json.loads((folder / "cfg.json").read_text())
    return {"path": str(folder), "sha256_16": hashlib.sha256(weights.read_bytes()).hexdigest()[:16],
            "d_sae": cfg.get("d_sae"), "k": cfg.get("k"), "hook": cfg.get("hook_name") or cfg.get("metadata", {}).get("hook_name"),
            "explained_variance": q["explained_variance"], "l0": q["l0"], "dead_fraction": q["dead_fraction"],
            "quality_tokens": q["n_tokens"]}


def commands(config: str, root: Path, sae: Path, methods: list[str], seeds: list[int], sets: list[str]):
    """``(run folder, argv)`` per (method, seed), methods outermost in :data:`METHODS` order."""
    out = []
    for method in [m for m in METHODS if m in methods]:
        for seed in seeds:
            folder = root / method / f"seed-{seed}"
            argv = [sys.executable, "-m", "probelab.train.cocomix", "--config", config,
                    "--set", f"run.out_dir={folder}", "--set", f"run.seed={seed}", "--set", f"teacher.sae={sae}",
                    "--set", "run.progress=false"]
            for kv in [*sets, *METHODS[method]]:
                argv += ["--set", kv]
            out.append((method, seed, folder, argv))
    return out


def run_one(folder: Path, cmd: list[str], threads: int | None) -> int:
    """One training run, its output in ``ROOT/METHOD/seed-S.log.txt``; its exit code."""
    import os

    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"== {folder}: {time.strftime('%H:%M:%S', time.gmtime())}", flush=True)
    env = dict(os.environ, **({"PROBELAB_THREADS": str(threads)} if threads else {}))
    with open(folder.parent / f"{folder.name}.log.txt", "a") as fh:
        return subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)


def pool_threads(n_jobs: int) -> int:
    """CPU threads each of ``n_jobs`` parallel runs gets."""
    import os

    return max(1, (os.cpu_count() or 1) // n_jobs)


def run_jobs(jobs: list, n_jobs: int) -> list[str]:
    """Run every job, ``n_jobs`` at a time with the CPU threads split between them; the failed folders.

    With ``n_jobs > 1`` the first labelled run goes alone first, with every thread, for one step
    (``run.stop_after=1``): that builds the label cache the other labelled runs read, so no two
    processes label the corpus at once. It then resumes in the pool like any interrupted run.
    """
    from concurrent.futures import ThreadPoolExecutor

    failed = []

    def done(folder, code):
        if code:
            failed.append(str(folder))
            print(f"   failed (exit {code}): see {folder.parent / (folder.name + '.log.txt')}", flush=True)

    if n_jobs <= 1:
        for _, _, folder, cmd in jobs:
            done(folder, run_one(folder, cmd, None))
        return failed
    labelled = [j for j in jobs if j[0] != "ntp"]
    if labelled and not (labelled[0][2] / "summary.json").is_file():
        _, _, folder, cmd = labelled[0]
        code = run_one(folder, [*cmd, "--set", "run.stop_after=1"], None)
        if code:  # no labels: the other labelled runs would each label again; run the NTP ones only
            done(folder, code)
            failed += [str(f) for _, _, f, _ in labelled[1:]]
            jobs = [j for j in jobs if j[0] == "ntp"]
    threads = pool_threads(n_jobs)
    with ThreadPoolExecutor(n_jobs) as pool:
        futures = [(folder, pool.submit(run_one, folder, cmd, threads)) for _, _, folder, cmd in jobs]
        for folder, fut in futures:
            done(folder, fut.result())
    return failed


def collect(root: Path, methods: list[str]) -> tuple[list[dict], dict]:
    """One row per finished run, and the validation curves ``{method seed S: [eval rows]}``."""
    rows, curves = [], {}
    for method in [m for m in METHODS if m in methods]:
        for folder in sorted((root / method).glob("seed-*")):
            summary_file = folder / "summary.json"
            if not summary_file.is_file():
                continue
            s = json.loads(summary_file.read_text())
            evals = s["evals"]
            rows.append({"method": method, "seed": s["seed"], "parameters": s["parameters"],
                         "embedding_parameters": s.get("embedding_parameters"), "hidden_size": s["hidden_size"],
                         "vocab_size": s.get("vocab", {}).get("size"), "tokens_seen": s["tokens_seen"],
                         "val_ppl": evals[-1]["val_ppl"], "train_seconds": s["train_seconds"],
                         "precision": s.get("precision"), "torch_threads": s.get("torch_threads"),
                         "teacher_bf16": s.get("teacher_bf16")})
            curves[f"{method} seed {s['seed']}"] = evals
    return rows, curves


def threads_per_run(rows: list[dict], n_jobs: int) -> int | None:
    """What the runs recorded, else what ``--jobs`` gave them (None: $PROBELAB_THREADS or 2)."""
    recorded = {r["torch_threads"] for r in rows if r.get("torch_threads")}
    if len(recorded) == 1:
        return recorded.pop()
    return pool_threads(n_jobs) if n_jobs > 1 else None


def precision_of(rows: list[dict], config: str, sets: list[str]) -> str:
    """Students' and teacher's precision: recorded by the runs, else the config's resolved on this machine."""
    students = {r["precision"] for r in rows if r.get("precision")}
    teacher = {r["teacher_bf16"] for r in rows if r.get("teacher_bf16") is not None}
    if not students or not teacher:
        from probelab.train.cocomix import teacher_bf16
        from probelab.train.config import load_config
        from probelab.train.run import resolve_precision

        cfg = load_config(config, ["run.recipe=cocomix", *sets])
        students = students or {resolve_precision(cfg.train.precision)}
        teacher = teacher or {teacher_bf16(cfg)}
    from probelab.train.provenance import PRECISION

    return (f"students in {' / '.join(PRECISION.get(p, p) for p in sorted(students))}, teacher labels in "
            + " / ".join(PRECISION["bf16" if t else "no"] for t in sorted(teacher)))


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def render(rows: list[dict], curves: dict, sae: dict, header: dict) -> str:
    lines = [f"# CoCoMix vs NTP on CPU, {len({r['seed'] for r in rows})} seed(s)", "",
             f"Made by `{header['command']}` (config `{header['config']}`, code at {header['commit']}, "
             f"{header['date']}, {header['machine']}, {header['duration_min']:.0f} min; {header['precision']}).", "",
             f"Teacher SAE: `{sae['path']}` (weights sha256 {sae['sha256_16']}, {sae['d_sae']} latents, k {sae['k']}, "
             f"hook {sae['hook']}; held-out explained variance {sae['explained_variance']:.3f}, L0 {sae['l0']:.1f}, "
             f"dead {100 * sae['dead_fraction']:.1f}% over {sae['quality_tokens']:,} tokens).", "",
             "| method | seeds | parameters | embedding share | tokens seen | held-out ppl (mean ± sd) |",
             "|---|---:|---:|---:|---:|---|"]
    by_method: dict[str, list[dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    for method, rs in by_method.items():
        emb = rs[0]["embedding_parameters"]
        share = f"{100 * emb / rs[0]['parameters']:.0f}%" if emb else "–"
        lines.append(f"| {LABELS[method]} | {len(rs)} | {rs[0]['parameters'] / 1e6:.2f}M | {share} | "
                     f"{rs[0]['tokens_seen']:,} | {mean_sd([r['val_ppl'] for r in rs])} |")
    from probelab.train.seed_stats import differences_table, per_seed

    values = per_seed(rows, "method", ["val_ppl"])
    if len({tuple(sorted(r["seed"] for r in rs)) for rs in by_method.values()}) > 1:  # different seeds: no pairing
        columns = [("val_ppl", "held-out ppl", lambda d: f"{d:+.2f}")]
    else:  # a seed fixes the data order for every method (and the initialisation for both CoCoMix runs)
        columns = [("val_ppl", "held-out ppl (Welch)", lambda d: f"{d:+.2f}"),
                   ("val_ppl", "held-out ppl (paired by seed)", lambda d: f"{d:+.2f}", "paired")]
    diffs = differences_table(values, columns, LABELS, PAIRS)
    if diffs:
        lines += ["", *diffs]
    steps = sorted({e["tokens"] for ev in curves.values() for e in ev})
    lines += ["", "Held-out perplexity over tokens seen (mean ± sd over seeds):", "",
              "| tokens seen | " + " | ".join(LABELS[m] for m in by_method) + " |",
              "|---:|" + "---|" * len(by_method)]
    for tokens in steps:
        cells = []
        for method in by_method:
            vals = [e["val_ppl"] for k, ev in curves.items() if k.startswith(method + " seed") for e in ev
                    if e["tokens"] == tokens]
            cells.append(mean_sd(vals) if vals else "–")
        lines.append(f"| {tokens:,} | " + " | ".join(cells) + " |")
    lines += ["", "Per-run numbers: the `.csv` beside this file; curves: the `-curves.html`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="cocomix_cpu_seeds", help="a cocomix config file or packaged name")
    ap.add_argument("--sae", required=True, type=Path, help="the teacher SAE folder (probelab sae train --out)")
    ap.add_argument("--root", default="runs/cocomix-seeds")
    ap.add_argument("--name", default="cocomix-seeds", help="training/results/<name>.{md,csv}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--results", default="training/results")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time, the CPU threads split between them (the label pass goes first, alone)")
    ap.add_argument("--dry-run", action="store_true", help="check the SAE, print the commands, run nothing")
    args = ap.parse_args(argv)
    sae = sae_identity(args.sae.expanduser().resolve())
    root = Path(args.root)
    jobs = commands(args.config, root, Path(sae["path"]), args.methods, args.seeds, args.sets)
    if args.dry_run:
        print(json.dumps(sae))
        for *_, cmd in jobs:
            print(" ".join(cmd[1:]))
        return 0
    from probelab.train.provenance import git_commit

    t0, commit = time.time(), git_commit()  # the code the runs start from
    failed = run_jobs(jobs, args.jobs)
    rows, curves = collect(root, args.methods)
    if not rows:
        print("error: no finished runs to tabulate", file=sys.stderr)
        return 1
    from probelab.paths import atomic_write_text
    from probelab.train.curves import plot_curves
    from probelab.train.provenance import machine

    header = {"command": " ".join(["python", "training/cocomix_table.py", *(argv if argv is not None else sys.argv[1:])]),
              "config": args.config, "commit": commit, "date": time.strftime("%Y-%m-%d", time.gmtime()),
              "machine": machine(threads_per_run(rows, args.jobs)), "precision": precision_of(rows, args.config, args.sets),
              "duration_min": (time.time() - t0) / 60}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / f"{args.name}.csv", buf.getvalue())
    plot_curves(curves, ["val_ppl"], out / f"{args.name}-curves.html", "CoCoMix vs NTP: held-out perplexity", x="tokens")
    atomic_write_text(out / f"{args.name}.md", render(rows, curves, sae, header))
    print((out / f"{args.name}.md").read_text())
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
