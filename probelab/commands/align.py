"""``probelab align`` (hidden-state alignment of one checkpoint) and ``probelab compare`` (several)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from . import options


def align_cmd(
    ckpt: str = typer.Argument(..., help="Control LLM checkpoint folder, model name, or a fine-tuned model (with --base)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (written atomically)."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model: compare CKPT with it layer by layer."),
    probes: str = typer.Option("analogies", "--probes", help="Probe set name or file (.jsonl pairs / .txt)."),
    k: Optional[int] = typer.Option(None, "--k", min=1, help="Neighbours for retention@k: 1..n-1 for n probe "
                                                             "sentences [default: 5, or n-1 if smaller]."),
    umap: bool = typer.Option(True, "--umap/--no-umap", help="Compute the UMAP map (the slowest step)."),
    metric: str = typer.Option("cosine", "--metric", help="UMAP / silhouette metric (cosine, euclidean, ...)."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="UMAP random_state."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Use the content-addressed capture/UMAP cache."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    overwrite: bool = options.overwrite_option(),
    device: str = options.device_option(),
    dtype: str = options.dtype_option(),
) -> None:
    """Per-layer drift, semantic stability, neighbours and UMAP between two sides; writes DIR/metrics.json,
    CSV tables and report.html. Without --base, CKPT must be a Control LLM (pretrained vs expanded branch)."""
    from ..analysis import run_alignment

    res = run_alignment(ckpt, base=base, probes=probes, out=out, k=k, umap=umap, umap_metric=metric, seed=seed,
                        use_cache=cache, batch_size=batch_size, overwrite=overwrite, device=device, dtype=dtype)
    con = Console()
    con.print(res.summary_table())
    t = res.timings
    con.print(f"wrote {out}/report.html, metrics.json and {len(res.tables)} CSV tables "
              f"({t['total_s']:.1f} s{', captures from cache' if t['captures_cached'] else ''})")


def compare_cmd(
    dirs: List[Path] = typer.Argument(..., help="Alignment folders written by `probelab align`, in display order."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for compare.html and compare.csv."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Figure 8 grid columns, e.g. 3,7,11 [default: up "
                                         "to 4 spread over the layers every folder compares]; rows: the first 4 folders."),
    overwrite: bool = options.overwrite_option(),
) -> None:
    """Several alignments side by side (e.g. the checkpoints of one run): one HTML page and one CSV, with the
    paper's Figure 8 grid (one row per folder, one column per layer, one shared UMAP fit per layer)."""
    from rich.table import Table

    from ..analysis import compare

    from ..errors import ProbelabError

    chosen = None
    if layers is not None:
        try:
            chosen = [int(x) for x in layers.split(",") if x.strip()]
        except ValueError:
            raise ProbelabError(f"--layers {layers!r}: give whole layer numbers separated by commas, e.g. 3,7,11") from None
        if not chosen:
            raise ProbelabError("--layers is empty")
    folder, scores = compare(dirs, out, overwrite=overwrite, layers=chosen)
    t = Table(title="alignment scores")
    for c in ("run", "mode", "alignment_score", "direction", "magnitude", "neighbourhood", "stability"):
        t.add_column(c, justify="left" if c in ("run", "mode") else "right", min_width=len(c), no_wrap=True)
    for _, r in scores.iterrows():
        t.add_row(str(r["run"]), str(r["mode"]),
                  *[("-" if r.get(c) is None or r.get(c) != r.get(c) else f"{r[c]:.4f}")
                    for c in ("alignment_score", "direction", "magnitude", "neighbourhood", "stability")])
    import sys

    con = Console() if sys.stdout.isatty() else Console(width=200)  # piped: never cut to "alignmen…"
    con.print(t)
    con.print(f"wrote {folder}/compare.html and {folder}/compare.csv")


def register(app: typer.Typer) -> None:
    app.command("align")(align_cmd)
    app.command("compare")(compare_cmd)
