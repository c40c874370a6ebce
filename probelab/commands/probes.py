"""``probelab probes``: list the built-in probe sets; ``probelab probes show NAME``."""
from __future__ import annotations

from collections import Counter

import typer
from rich.console import Console
from rich.table import Table

probes_app = typer.Typer(help="Probe sets: list them, show one.", no_args_is_help=False,
                         invoke_without_command=True)


@probes_app.callback()
def list_sets(ctx: typer.Context) -> None:
    """List the built-in probe sets (name, sentences, pairs, categories)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..probes import available_probe_sets, load_probes

    table = Table(title="probelab probe sets")
    for col in ("name", "sentences", "pairs", "categories", "file"):
        table.add_column(col)
    for name, path in available_probe_sets().items():
        ps = load_probes(name)
        table.add_row(name, str(len(ps.items)), str(len(ps.pairs)), str(len(ps.categories)), str(path))
    Console().print(table)


@probes_app.command("show")
def show(name: str = typer.Argument(..., help="a built-in set name or a probe file path"),
         source: str = typer.Option(None, help="keep only pairs with this source (e.g. 'paper')")) -> None:
    """Print every sentence of a probe set with its pair id and category."""
    from ..probes import load_probes

    ps = load_probes(name)
    if source:
        ps = ps.filter(source=source)
    table = Table(title=f"{ps.name}: {len(ps.items)} sentences, {len(ps.pairs)} pairs")
    for col in ("#", "text", "pair", "side", "category", "source"):
        table.add_column(col)
    for i, p in enumerate(ps.items):
        table.add_row(str(i), p.text, p.pair_id or "-", str(p.side), p.category, p.source)
    console = Console()
    console.print(table)
    counts = Counter(p.category for p in ps.items)
    console.print("categories: " + ", ".join(f"{k} ({v})" for k, v in sorted(counts.items())))


def register(app: typer.Typer) -> None:
    app.add_typer(probes_app, name="probes")
