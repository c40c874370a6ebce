"""``probelab models``: the registry of named models."""
from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table


def models_cmd() -> None:
    """List named models: name, source, parameters, cached or not."""
    from ..models import MODELS

    table = Table(title="probelab models")
    for col in ("name", "source", "params", "cached", "description"):
        table.add_column(col)
    for spec in MODELS.values():
        cached = "yes" if spec.is_cached() else ("needs network" if spec.source == "hub" else "no")
        table.add_row(spec.name, spec.source, spec.params, cached, spec.description)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models_cmd)
