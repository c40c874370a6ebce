"""Run the continual-SFT comparison table: the base model, then every method, for each seed, one after
the other, then collect them with training/make_table.py.

    python training/run_table.py                                   # cpu-small, seed 0, all methods
    python training/run_table.py --config cpu-long --name cpu-long --seeds 0 1 2 \\
        --set eval.skill_n=200 --set eval.wiki_n=100
    python training/run_table.py --methods full lerp-mse --seeds 0 1 --dry-run   # print the commands

Every run is ``python -m probelab.train.csft --config CONFIG --set run.seed=S
--set run.out_dir=ROOT/METHOD/seed-S <the method's keys> <--set ...>``, its output in
``ROOT/METHOD/seed-S/log.txt``. The runs go through the training stack's run-folder rules, so running
the table again skips the finished runs and resumes an interrupted one. The table shows mean ± sd over
the seeds (sample standard deviation) when there are several. The whole table runs under the shared
heavy-job lock (``--lock``, default /tmp/probelab-heavy.lock) so that timings are not disturbed.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

METHODS = {  # run folder -> the keys that make the method (same data, steps and optimizer for all)
    "base": ["method.name=full", "train.steps=0", "eval.at_start=true"],
    "full": ["method.name=full"],
    "partial": ["method.name=partial", "method.every=5"],
    "stack": ["method.name=stack", "method.num_expanded=6"],
    "hybrid": ["method.name=hybrid", "method.num_expanded=6", "method.interpolation=lerp", "method.divergence=mse"],
    "lerp-mse": ["method.name=control", "method.interpolation=lerp", "method.divergence=mse"],
    "lerp": ["method.name=control", "method.interpolation=lerp", "method.divergence=none"],
    "dlerp": ["method.name=control", "method.interpolation=dlerp", "method.divergence=none"],
    "dlerp-mse": ["method.name=control", "method.interpolation=dlerp", "method.divergence=mse"],
    # the Control LLM authors' defaults (method.preset=official): Lerp factor fixed at 0.5, random gate
    # init, AdamW weight decay 1e-2
    "lerp-mse-official": ["method.name=control", "method.preset=official", "method.interpolation=lerp",
                          "method.divergence=mse"],
    "dlerp-official": ["method.name=control", "method.preset=official", "method.interpolation=dlerp",
                       "method.divergence=none"],
}
ORDER = ["base", "full", "lerp-mse", "lerp", "dlerp", "partial", "stack", "hybrid"]  # most informative first


def run_dir(root: Path, method: str, seed: int) -> Path:
    return root / method / f"seed-{seed}"


def commands(config: str, root: Path, methods: list[str], seeds: list[int], sets: list[str],
             methods_first: bool = False) -> list[tuple[Path, list[str]]]:
    """``(run folder, argv)`` for every (seed, method), seeds outermost (a partial table has whole seeds)
    or, with ``methods_first``, methods outermost (a partial table has every seed of the first methods)."""
    out = []
    pairs = ([(s, m) for m in methods for s in seeds] if methods_first else [(s, m) for s in seeds for m in methods])
    for seed, method in pairs:
        folder = run_dir(root, method, seed)
        argv = [sys.executable, "-m", "probelab.train.csft", "--config", config,
                "--set", f"run.out_dir={folder}", "--set", f"run.seed={seed}", "--set", "run.progress=false"]
        for kv in [*sets, *METHODS[method]]:  # the method's keys last: base keeps train.steps=0
            argv += ["--set", kv]
        out.append((folder, argv))
    return out


@contextlib.contextmanager
def heavy_lock(path: str | None):
    if not path or os.environ.get("PROBELAB_LOCK_HELD"):
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="cpu-small", help="a csft config file or packaged name")
    ap.add_argument("--root", help="where the runs go (default runs/<name>)")
    ap.add_argument("--name", default="cpu-small", help="training/results/<name>.{md,csv}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--methods", nargs="+", default=ORDER, choices=list(METHODS))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="one more key for every run (e.g. eval.skill_n=200)")
    ap.add_argument("--methods-first", action="store_true",
                    help="run every seed of a method before the next method (default: every method of a seed first)")
    ap.add_argument("--results", default="training/results", help="folder for the table")
    ap.add_argument("--lock", default="/tmp/probelab-heavy.lock", help="heavy-job lock file ('' = none)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    root = Path(args.root or f"runs/{args.name}")
    methods = ["base", *[m for m in args.methods if m != "base"]]  # every table needs its base rows
    jobs = commands(args.config, root, methods, args.seeds, args.sets, args.methods_first)
    table = [sys.executable, str(Path(__file__).with_name("make_table.py")), "--root", str(root),
             "--out", args.results, "--name", args.name, "--config", args.config]
    if args.dry_run:
        for _, cmd in [*jobs, (None, table)]:
            print(" ".join(cmd[1:]))
        return 0
    failed, t0 = [], time.time()
    with heavy_lock(args.lock):
        for folder, cmd in jobs:
            folder.parent.mkdir(parents=True, exist_ok=True)
            print(f"== {folder}: {time.strftime('%H:%M:%S', time.gmtime())}", flush=True)
            log = folder.parent / f"{folder.name}.log.txt"  # beside the run: the run folder holds only the run
            with open(log, "w") as fh:
                code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith(("[eval]", "[train]", "error:"))]
            print("\n".join(lines[-3:]), flush=True)
            if code:
                failed.append(str(folder))
                print(f"   failed (exit {code}): see {log}", flush=True)
    command = " ".join(["python", "training/run_table.py", *(argv if argv is not None else sys.argv[1:])])
    code = subprocess.call([*table, "--command", command, "--duration-min", f"{(time.time() - t0) / 60:.1f}"])
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or code else 0


if __name__ == "__main__":
    sys.exit(main())
