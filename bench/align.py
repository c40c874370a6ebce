"""Alignment analysis of one checkpoint on the analogy set, uncached vs cached (embedded SmolLM2).

    flock /tmp/probelab-heavy.lock .venv/bin/python bench/align.py

The checkpoint is the embedded SmolLM2-135M-Instruct expanded into a Control LLM (concat, Lerp,
``--expanded`` merged layers; expanded weights nudged with small noise so there is drift to
measure), saved as a folder. A fresh cache directory is used, then the same call is repeated:

- uncached: load the model, capture all 120 probes in one pass per batch, all metrics, UMAP
  (including umap-learn's numba compilation, paid once per process), report + CSVs;
- cached:   the captures and the UMAP map come from the content-addressed cache (no model load).

``--mode models`` instead aligns a fine-tune against its base (resid stream, all 30 layers:
7,200 UMAP points). Prints both times and the uncached/cached ratio measured in this run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch


def make_checkpoint(folder: Path, mode: str, expanded: int, noise: float) -> tuple[str, str | None]:
    from probelab.models import load_model

    model, tok = load_model("smollm2-135m")
    g = torch.Generator().manual_seed(0)
    if mode == "branches":
        from probelab.models.control import ExpansionConfig, expand_model, save_control

        ctrl = expand_model(model, ExpansionConfig(num_expanded=expanded, interpolation="lerp"))
        with torch.no_grad():
            for layer in ctrl.control_layers:
                for p in layer.expanded.parameters():
                    p.add_(noise * p.std() * torch.randn(p.shape, generator=g))
        save_control(ctrl, folder, tok)
        return str(folder), None
    with torch.no_grad():
        for p in model.model.layers.parameters():
            p.add_(noise * p.std() * torch.randn(p.shape, generator=g))
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return str(folder), "smollm2-135m"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["branches", "models"], default="branches")
    ap.add_argument("--expanded", type=int, default=6, help="merged layers of the Control LLM (branches mode)")
    ap.add_argument("--noise", type=float, default=0.05, help="relative weight noise on the trained side")
    ap.add_argument("--probes", default="analogies")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="probelab-bench-align-"))
    os.environ["PROBELAB_CACHE"] = str(work / "cache")  # fresh cache; the embedded model is linked in
    from probelab.models.embedded import embedded_cache_path
    from probelab.paths import cache_dir

    real = Path.home() / ".cache" / "probelab" / "models" / "smollm2-135m"
    src = real if real.is_dir() else None
    if src is not None:
        (cache_dir() / "models").mkdir(parents=True, exist_ok=True)
        embedded_cache_path().symlink_to(src)
    try:
        ckpt, base = make_checkpoint(work / "ckpt", args.mode, args.expanded, args.noise)
        from probelab.analysis import run_alignment

        t0 = time.perf_counter()
        r1 = run_alignment(ckpt, base=base, probes=args.probes, out=work / "out1", progress=False)
        t1 = time.perf_counter()
        r2 = run_alignment(ckpt, base=base, probes=args.probes, out=work / "out2", progress=False)
        t2 = time.perf_counter()
        assert r2.timings["captures_cached"] and r1.layer_rows == r2.layer_rows
        n_points = len(r1.tables["umap"]) if "umap" in r1.tables else 0
        print(f"checkpoint: SmolLM2-135M {args.mode} ({len(r1.layer_rows)} layers compared), "
              f"{r1.summary['n_probes']} probes, {n_points} UMAP points, torch threads {args.threads}")
        for name, r, t in (("uncached", r1, t1 - t0), ("cached:  ", r2, t2 - t1)):
            x = r.timings
            print(f"{name} {t:6.2f} s  (capture {x['capture_s']:.2f} s, metrics+UMAP {x['analysis_s']:.2f} s of which "
                  f"UMAP {x['umap_s']:.2f} s and silhouettes {x['silhouette_s']:.2f} s, report+CSVs {x['write_s']:.2f} s)")
        print(f"ratio uncached/cached: {(t1 - t0) / (t2 - t1):.1f}x   alignment score {r1.score:.4f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
