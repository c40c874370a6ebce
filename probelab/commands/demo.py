"""``probelab demo``: the main job on the embedded default model, end to end.

1. load the embedded SmolLM2-135M and capture the analogy probes at every layer (summary table);
2. expand it into a Control LLM (Lerp + MSE, 6 expanded blocks) and run the CPU smoke continual-SFT
   recipe (:mod:`probelab.train.csft` on the packaged config ``cpu-smoke``, i.e.
   ``training/configs/cpu-smoke.yaml``: 3-digit addition, a few minutes on 2 cores);
3. align the trained checkpoint's pretrained vs expanded branches on the analogy probes and write the
   report (metrics.json, CSVs, report.html).
Outputs go to ``$PROBELAB_CACHE/demo``; a finished training run is reused (``--retrain`` redoes it).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import typer
from rich.console import Console

from ..errors import ProbelabError
from . import options

STEPS = 3


def _step(console: Console, i: int, text: str) -> None:
    console.print(f"[bold][{i}/{STEPS}][/bold] {text}")


def capture_step(console: Console, model_name: str, out: Path, device: str = "auto", dtype: str = "auto"):
    from .. import capture, load_model, load_probes
    from ..summary import layer_summary, summary_table

    t0 = time.perf_counter()
    m, tok = load_model(model_name, device=device, dtype=dtype)
    ps = load_probes("analogies")
    caps = capture(m, tok, ps.texts, select="last")
    caps.save(out / "captures")
    _step(console, 1, f"{model_name}: captured {len(ps.texts)} analogy sentences x {len(caps.layers['resid'])} "
                      f"layers in {time.perf_counter() - t0:.1f} s -> {out / 'captures'}")
    console.print(summary_table(layer_summary(caps, ps.pairs), "analogy probes, last token, per layer"))


def train_step(console: Console, out: Path, retrain: bool) -> Path:
    from ..resources import training_config
    from ..train.csft import main as train_csft

    run = out / "cpu-smoke"
    final = run / "final"
    if retrain and run.exists():
        shutil.rmtree(run)
    if (final / "config.json").is_file():
        _step(console, 2, f"reusing the trained Control LLM at {final} (--retrain to redo it)")
        return final
    config = training_config("cpu-smoke")
    _step(console, 2, f"expanding into a Control LLM (Lerp + MSE, 6 blocks) and training it: {config.name}")
    t0 = time.perf_counter()
    train_csft(["--config", str(config), "--set", f"run.out_dir={run}"])
    if not (final / "config.json").is_file():
        raise ProbelabError(f"training finished without a final checkpoint in {final}")
    console.print(f"    trained in {time.perf_counter() - t0:.0f} s; curves: {run / 'curves.html'}")
    return final


def align_step(console: Console, ckpt: Path, out: Path, device: str = "auto", dtype: str = "auto") -> None:
    from ..analysis import run_alignment

    # capture of both branches has its own bar; the metrics and the per-layer UMAP fits run under a spinner
    with console.status("[3/3] aligning pretrained vs expanded branches: capture, per-layer metrics, UMAP "
                        "(about a minute on 2 cores)"):
        res = run_alignment(ckpt, probes="analogies", out=out / "align", device=device, dtype=dtype)
    _step(console, 3, f"aligned pretrained vs expanded branches: alignment score {res.score:.3f}")
    console.print(res.summary_table())
    console.print(f"report: {out / 'align' / 'report.html'}   (explore it in the browser: probelab app)")


def demo_cmd(
    model: str = typer.Option("smollm2-135m", help="model to run the demo on"),
    retrain: bool = typer.Option(False, help="redo the smoke training even if a finished run exists"),
    skip_train: bool = typer.Option(False, help="only capture and summarise (step 1)"),
    device: str = options.device_option(),
    dtype: str = options.dtype_option(),
) -> None:
    """Capture probes, expand + train a Control LLM on CPU for a few minutes, align it, write the report."""
    from ..paths import cache_dir

    console = Console()
    out = cache_dir() / "demo"
    capture_step(console, model, out, device, dtype)  # the training step runs its config's CPU recipe
    if skip_train:
        return
    if model != "smollm2-135m":
        raise ProbelabError("the training part of the demo runs on the embedded smollm2-135m; use --skip-train")
    ckpt = train_step(console, out, retrain)
    align_step(console, ckpt, out, device, dtype)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
