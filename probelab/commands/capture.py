"""``probelab capture``: hidden states of probe sentences (or given texts), written to a folder."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import ProbelabError
from . import options


def capture_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="output folder (captures.json + states.safetensors)"),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="model name, local folder or (with --allow-network) hub id"),
    probes: str = typer.Option(None, "--probes", "-p", help="probe set name or file (default: analogies when no --text)"),
    text: list[str] = typer.Option(None, "--text", "-t", help="a text to capture (repeatable); replaces --probes"),
    select: str = typer.Option("last", help="token selection: last | mean (every token but the first, an "
                                             "attention sink) | all"),
    layers: str = typer.Option(None, "--layers", help="only these resid layers, e.g. 0,12,-1 (the forward pass "
                                                      "stops after the last one) [default: all]"),
    backend: str = typer.Option("hf", help="hf | transformer-lens"),
    batch_size: int = typer.Option(32, min=1, help="texts per forward pass"),
    padding_side: str = typer.Option(None, help="left | right (default: the tokenizer's)"),
    allow_network: bool = typer.Option(False, help="allow downloading a hub model"),
    device: str = options.device_option(),
    dtype: str = options.dtype_option(),
    overwrite: bool = options.overwrite_option(),
) -> None:
    """Capture the residual stream after every layer (and the embeddings) for a list of texts."""
    from ..paths import check_out

    check_out(out, "captures", overwrite)  # before anything heavy is imported or loaded
    from .. import capture, load_model, load_probes
    from ..summary import layer_summary, summary_table

    if text is not None and len(text) > 0 and probes:
        raise ProbelabError("give either --text or --probes, not both")
    pairs = None
    if text:
        texts = list(text)
    else:
        ps = load_probes(probes or "analogies")
        texts, pairs = ps.texts, ps.pairs
    keep = None
    if layers:
        try:
            keep = [int(x) for x in layers.split(",") if x.strip()]
        except ValueError:
            raise ProbelabError(f"--layers must be comma-separated integers, not {layers!r}") from None
    m, tok = load_model(model, device=device, dtype=dtype, allow_network=allow_network or None)
    if padding_side:
        if padding_side not in ("left", "right"):
            raise ProbelabError(f"--padding-side must be left or right, not {padding_side!r}")
        tok.padding_side = padding_side
    caps = capture(m, tok, texts, select=select, backend=backend, batch_size=batch_size,
                   **({"layers": keep} if keep is not None else {}))
    caps.meta.update({"model": model, "probes": probes or ("analogies" if not text else None)})
    caps.save(out, overwrite=overwrite)
    console = Console()
    if not caps.ragged:
        console.print(summary_table(layer_summary(caps, pairs), f"{model}: {len(texts)} texts, select={select}"))
    console.print(f"wrote {out} (streams: {', '.join(caps.streams)})")


def register(app: typer.Typer) -> None:
    app.command("capture")(capture_cmd)
