"""Benchmark: probelab capture vs transformer-lens TransformerBridge run_with_cache, and cold load.

Measured in one run on the embedded SmolLM2-135M with the 40 analogy sentences of the Control LLM
paper, residual stream at every layer (31 states per sentence), last token. Prints times and ratios.

    .venv/bin/python bench/capture.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch


def cold_load_seconds() -> float:
    """Load the cached model in a fresh interpreter (imports excluded, as a user's script would see)."""
    code = ("import time, probelab, transformers; transformers.utils.logging.disable_progress_bar(); "
            "t=time.perf_counter(); probelab.load_model('smollm2-135m'); print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import transformers

    transformers.utils.logging.disable_progress_bar()
    import probelab
    from probelab.capture.tl import boot_bridge, capture_tl

    model, tok = probelab.load_model("smollm2-135m")
    texts = probelab.load_probes("analogies").filter(source="paper").texts
    print(f"model smollm2-135m, {len(texts)} sentences, {model.config.num_hidden_layers + 1} layers, "
          f"torch threads {torch.get_num_threads()}")

    t_load = cold_load_seconds()
    t0 = time.perf_counter()
    bridge = boot_bridge(model, tok)
    t_boot = time.perf_counter() - t0

    ours = lambda: probelab.capture(model, tok, texts, select="last", progress=False)  # noqa: E731
    theirs = lambda: capture_tl(model, tok, texts, select="last", bridge=bridge)  # noqa: E731
    ours(), theirs()  # warm-up
    t_ours = median_time(ours, args.repeats)
    t_tl = median_time(theirs, args.repeats)
    diff = (ours().stream() - theirs().stream()).abs().max().item()

    print(f"cold load from cache (fresh process):     {t_load:6.2f} s")
    print(f"TransformerBridge boot (not in ratio):    {t_boot:6.2f} s")
    print(f"probelab capture (hf, batched):           {t_ours:6.2f} s")
    print(f"TransformerBridge run_with_cache (1/text): {t_tl:6.2f} s")
    print(f"ratio TL / probelab:                      {t_tl / t_ours:6.2f}x   (max |diff| {diff:.2e})")


if __name__ == "__main__":
    main()
