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
alignment page's first chart (the drift curves: the first useful page) has drawn, and until all its
plotly charts have (the UMAP map, fitted after the rest of the page, included). Numba's on-disk JIT cache (umap-learn)
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


DRAWN = "[...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('.main-svg')).length"


def wait_for_charts(page, count: int, timeout_s: float = 900) -> None:
    """Wait until ``count`` plotly charts have drawn (each chart has several ``.main-svg`` layers, so
    counting those, as ``browser.wait_for_plots`` does, would stop at the second chart)."""
    page.wait_for_function(f"{DRAWN} >= {count}", timeout=timeout_s * 1000)


def first_page(url: str, page, charts: int, t0: float | None = None) -> tuple[float, float]:
    """Seconds from ``t0`` (default: now) until the first chart and until ``charts`` charts have drawn."""
    t0 = time.perf_counter() if t0 is None else t0
    page.goto(f"{url}/")
    wait_for_charts(page, 1)
    first = time.perf_counter() - t0
    wait_for_charts(page, charts)
    return first, time.perf_counter() - t0


def timed_server(cache: Path, model: str, charts: int, log: Path, reopen: bool = False):
    """``((first chart, all charts) from the spawn, (first, all) in a new tab of the same server or None)``."""
    env = {"PROBELAB_CACHE": str(cache), "PROBELAB_APP_UMAP": "1", "PROBELAB_APP_ROOTS": str(cache / "no-runs")}
    t0 = time.perf_counter()
    with browser.running_app(model=model, env=env, log=log, timeout=300) as url, browser.chromium_page() as page:
        total = first_page(url, page, charts, t0)
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
    print(f"probelab app, alignment page on {args.model} (load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")
    print("                                  first chart   all charts (UMAP included)")
    for what, (first, full) in (("cold cache, new server", cold), ("warm cache, restarted server", warm_new),
                                ("warm, same server, new tab", warm_same)):
        ratio = "" if what.startswith("cold") else f"   (cold / warm = {cold[0] / first:5.1f}x first, {cold[1] / full:5.1f}x all)"
        print(f"  {what:30s} {first:7.1f} s   {full:7.1f} s{ratio}")
    if args.keep:
        print(f"  cache and server logs: {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
