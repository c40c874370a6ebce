"""Time to the first useful page of ``probelab app``: server start -> alignment plots drawn in Chromium.

    python bench/app_first_page.py                     # the embedded SmolLM2 (the app's default)
    python bench/app_first_page.py --model tiny-llama  # quick check of the script itself

Three measurements in one run, each from a real headless Chromium (the system's, via playwright):

1. **cold**: a new server on an empty probelab cache (no captures, no UMAP map, no stored result; the
   embedded model's safetensors folder is linked in, so its one-time GGUF conversion is not counted);
2. **warm, new server**: the server restarted on the cache the cold run filled (a restarted app);
3. **warm, same server**: the page opened again in a new tab of the running server (Streamlit's
   in-process caches hot).

Each time is from the moment the server process is spawned (1, 2) or the tab opens (3) until the
alignment page's plotly charts have drawn (UMAP included). Numba's on-disk JIT cache (umap-learn)
is not cleared: a first run ever on a machine adds its compile time to the cold number.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from probelab.app_support import browser
from probelab.paths import cache_dir


def first_page(url: str, page, charts: int) -> float:
    t0 = time.perf_counter()
    page.goto(f"{url}/")
    browser.wait_for_plots(page, count=charts, timeout_s=900)
    return time.perf_counter() - t0


def timed_server(cache: Path, model: str, charts: int, log: Path, reopen: bool = False) -> tuple[float, float | None]:
    env = {"PROBELAB_CACHE": str(cache), "PROBELAB_APP_UMAP": "1", "PROBELAB_APP_ROOTS": str(cache / "no-runs")}
    t0 = time.perf_counter()
    with browser.running_app(model=model, env=env, log=log, timeout=300) as url, browser.chromium_page() as page:
        first_page(url, page, charts)
        total = time.perf_counter() - t0
        again = None
        if reopen:
            again = first_page(url, page.context.browser.new_page(viewport={"width": 1440, "height": 1000}), charts)
    return total, again


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.environ.get("PROBELAB_APP_MODEL", "smollm2-135m"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary cache (printed)")
    ap.add_argument("--workdir", type=Path, default=None, help="an empty folder to use instead of a temporary one (kept)")
    args = ap.parse_args()
    reason = browser.missing()
    if reason:
        sys.exit(f"error: {reason}")
    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="probelab-bench-app-"))
    if args.workdir is not None:
        if args.workdir.exists() and any(args.workdir.iterdir()):
            sys.exit(f"error: --workdir {args.workdir} is not empty")
        args.workdir.mkdir(parents=True, exist_ok=True)
        args.keep = True
    cache = tmp / "cache"
    cache.mkdir()
    models = cache_dir() / "models"
    if models.is_dir():  # the materialized embedded model: not part of what the app caches
        (cache / "models").symlink_to(models)
    charts = 3  # drift curves, UMAP, pair heatmaps
    cold, _ = timed_server(cache, args.model, charts, tmp / "cold.log")
    warm_new, warm_same = timed_server(cache, args.model, charts, tmp / "warm.log", reopen=True)
    print(f"probelab app, first useful page (alignment: score, drift curves, UMAP, pair heatmaps) on {args.model}")
    print(f"  cold cache, new server          {cold:7.1f} s")
    print(f"  warm cache, restarted server    {warm_new:7.1f} s   (cold / warm = {cold / warm_new:5.1f}x)")
    print(f"  warm, same server, new tab      {warm_same:7.1f} s   (cold / warm = {cold / warm_same:5.1f}x)")
    if args.keep:
        print(f"  cache and server logs: {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
