"""Time to the first ``probelab concepts "..."`` answer with a cold concept-label cache.

    .venv/bin/python bench/concepts_first.py            # the default SAE (train it first: probelab sae train)
    .venv/bin/python bench/concepts_first.py --full     # also the full 300-intro label build, for the ratio
    .venv/bin/python bench/concepts_first.py --sae PATH # any sae-lens folder for the embedded model

Each run gets its own ``PROBELAB_CACHE`` under a temporary folder, with the materialised embedded
model and the trained SAEs linked in (so neither the GGUF conversion nor the SAE training is
counted) and no concept labels or firing densities: what a person meets the first time they ask
for concepts. Measured, in one run, as wall time of the real command in a subprocess:

1. **cold**: ``probelab concepts TEXT`` with no labels cached (builds the quick labels);
2. **warm**: the same command again (labels read from the cache);
3. with ``--full``: ``probelab sae labels`` in another cold cache (the full labels, 300 intros),
   which is what the first ``concepts`` call used to wait for.

The machine's load average is printed beside each number (the machine may be shared).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from probelab.paths import cache_dir

TEXT = "The capital of France is Paris, and the capital of Japan is Tokyo."


def fresh_cache(root: Path, name: str) -> Path:
    """A cache folder with the real cache's models and SAEs linked in, and nothing else."""
    cache = root / name
    cache.mkdir(parents=True)
    for part in ("models", "saes"):
        if (cache_dir() / part).is_dir():
            (cache / part).symlink_to(cache_dir() / part)
    return cache


def timed(argv: list[str], cache: Path, log: Path) -> float:
    env = {**os.environ, "PROBELAB_CACHE": str(cache)}
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(argv[2:])} failed (exit {proc.returncode}); see {log}:\n"
                 + log.read_text()[-1500:])
    return took


def load() -> str:
    return f"load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sae", default="default", help="default | an sae-lens folder for the embedded model")
    ap.add_argument("--text", default=TEXT)
    ap.add_argument("--full", action="store_true", help="also time the full label build (minutes)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary caches and logs (printed)")
    args = ap.parse_args()
    from probelab.sae.train import default_sae_path

    if args.sae == "default" and not (default_sae_path() / "cfg.json").is_file():
        sys.exit("error: the default SAE is not trained yet (probelab sae train), or pass --sae FOLDER")
    if not (cache_dir() / "models").is_dir():
        sys.exit("error: the embedded model is not materialised yet: run any command on it once (probelab models)")
    root = Path(tempfile.mkdtemp(prefix="probelab-bench-concepts-"))
    cli = [sys.executable, "-m", "probelab.cli"]
    concepts = [*cli, "concepts", "--sae", args.sae, args.text]
    try:
        cache = fresh_cache(root, "cache")
        print(f"probelab concepts {args.text!r} --sae {args.sae}: first call (no concept labels cached) vs again")
        print(f"  cold label cache   {timed(concepts, cache, root / 'cold.log'):7.1f} s   ({load()})")
        print(f"  warm label cache   {timed(concepts, cache, root / 'warm.log'):7.1f} s   ({load()})")
        tail = [line for line in (root / "cold.log").read_text().splitlines() if line.startswith("note:")]
        if tail:
            print(f"  {tail[-1]}")
        if args.full:
            full = timed([*cli, "sae", "labels", args.sae], fresh_cache(root, "full"), root / "full.log")
            print(f"  full labels alone  {full:7.1f} s   ({load()}; probelab sae labels {args.sae}: 300 intros)")
        if args.keep:
            print(f"  caches and logs: {root}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
