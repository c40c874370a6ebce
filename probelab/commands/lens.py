"""``probelab lens``: the logit lens of a text, per layer and (Control LLM) per branch."""
from __future__ import annotations

import json

import typer

from ..errors import ProbelabError
from . import options


def load_on(name: str, device: str, dtype: str, allow_network: bool):
    """``(model, tokenizer)`` on the resolved device and dtype."""
    import inspect

    from ..models import load_model
    from ..models.devices import resolve_device, resolve_dtype

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if "device" in inspect.signature(load_model).parameters:
        return load_model(name, device=dev, dtype=dt, allow_network=allow_network or None)
    model, tok = load_model(name, dtype=dt, allow_network=allow_network or None)
    return model.to(dev), tok


def _table(title: str, rows: list[dict], top_k: int):
    from rich.table import Table

    t = Table(title=title)
    for col in ("layer", "stream", f"top {top_k}", "p(target)", "rank", "KL to final", "entropy"):
        t.add_column(col, overflow="fold")
    for r in sorted(rows, key=lambda r: (r["layer"], r["stream"] != "resid", r["stream"])):
        top = "  ".join(f"{x['token']!r} {x['prob']:.2f}" for x in r["top"])
        t.add_row(str(r["layer"]), r["stream"], top, f"{r['target_prob']:.4f}", str(r["target_rank"]),
                  f"{r['kl']:.3f}", f"{r['entropy']:.2f}")
    return t


def lens_cmd(
    text: str = typer.Argument(..., help="the text to read"),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="model name or local folder"),
    base: str = typer.Option(None, "--base", "-b", help="a second model (e.g. the checkpoint's base) read the same way"),
    target: str = typer.Option(None, "--target", "-t",
                               help="a single token whose probability and rank are shown (default: the model's "
                                    "greedy prediction at each position)"),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="top tokens per layer"),
    position: int = typer.Option(-1, "--position", help="token position shown in the table (-1 = last)"),
    max_tokens: int = typer.Option(256, min=1, help="longer texts are truncated with a warning"),
    as_json: bool = typer.Option(False, "--json", help="print JSON: rows at the last position and per-layer grids"),
    device: str = options.device_option(),
    dtype: str = options.dtype_option(),
    allow_network: bool = options.allow_network_option(),
) -> None:
    """Logit lens: each layer's next-token prediction through the final norm and unembedding.

    For a Control LLM also its pretrained, expanded and merged branches at the merged layers.
    """
    import warnings

    from ..analysis.lens import lens

    results = {}
    for role, name in (("model", model), ("base", base)):
        if name is None:
            continue
        m, tok = load_on(name, device, dtype, allow_network)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results[role] = lens(m, tok, text, target=target, top_k=top_k, max_tokens=max_tokens)
        for w in caught:
            if "truncated" in str(w.message):
                typer.echo(f"warning: {w.message}", err=True)
        results[role].meta["model"] = name
    n = len(results["model"].tokens)
    if not -n <= position < n:
        raise ProbelabError(f"--position {position} is outside the text's {n} tokens")
    if as_json:
        out = {role: r.to_dict() for role, r in results.items()}
        print(json.dumps(out["model"] if base is None else out))
        return
    from rich.console import Console

    console = Console()
    for role, r in results.items():
        rows = r.rows(position)
        p = rows[0]["position"]
        what = f"target {r.targets[p]!r}" if r.target_given else "target = the model's own prediction"
        console.print(_table(f"{role} {r.meta['model']}: position {p} {r.tokens[p]!r}, {what}", rows, top_k))
        console.print(f"greedy next token after the text: {r.greedy_token!r}")


def register(app: typer.Typer) -> None:
    app.command("lens")(lens_cmd)
