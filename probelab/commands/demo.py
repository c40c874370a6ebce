"""``probelab demo``: the main job on the embedded default model, end to end."""
from __future__ import annotations

import time

import typer
from rich.console import Console


def demo_cmd(model: str = typer.Option("smollm2-135m", help="model to run the demo on")) -> None:
    """Load the embedded model, capture the analogy probes at every layer, print a per-layer summary."""
    from .. import capture, load_model, load_probes
    from ..paths import cache_dir
    from ..summary import layer_summary, summary_table

    console = Console()
    t0 = time.perf_counter()
    m, tok = load_model(model)
    console.print(f"[1/2] loaded {model} ({sum(p.numel() for p in m.parameters()) / 1e6:.0f}M params) "
                  f"in {time.perf_counter() - t0:.1f} s")
    ps = load_probes("analogies")
    t0 = time.perf_counter()
    caps = capture(m, tok, ps.texts, select="last")
    out = cache_dir() / "demo" / "captures"
    caps.save(out)
    console.print(f"[2/2] captured {len(ps.texts)} probe sentences x {len(caps.layers['resid'])} layers "
                  f"in {time.perf_counter() - t0:.1f} s -> {out}")
    console.print(summary_table(layer_summary(caps, ps.pairs), "analogy probes, last token, per layer"))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
