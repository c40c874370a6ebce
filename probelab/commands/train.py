"""``probelab train``: run a training config in this process, with the recipe its ``run.recipe`` names
(``csft``, the default: continual SFT / Control LLM, :mod:`probelab.train.csft`; ``cocomix``: CoCoMix
or its NTP baseline, :mod:`probelab.train.cocomix`).

For several processes use Accelerate: ``accelerate launch -m probelab.train --config X`` (docs/training.md).
"""
from __future__ import annotations

from typing import List, Optional

import typer


def train_cmd(
    config: Optional[str] = typer.Option(None, "--config", "-c",
                               help="a config file, or the name of a packaged config (tiny-test, cpu-smoke, "
                                    "cocomix_cpu, ...; `probelab train --list` names them)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="override one key: section.key=value"),
    start_over: bool = typer.Option(False, "--start-over",
                                    help="move a non-empty run.out_dir aside (<out_dir>.old-<time>) and start anew"),
    list_: bool = typer.Option(False, "--list", help="list the packaged configs and exit"),
) -> None:
    """Train: continual SFT (full, partial, stack, hybrid, Control LLM) or CoCoMix / NTP (one process)."""
    if list_:
        return list_configs()
    if not config:
        raise typer.BadParameter("give a config file or a packaged config name (see --list)", param_hint="--config")
    from ..train.run import dispatch

    argv = ["--config", config]
    for item in set_ or []:
        argv += ["--set", item]
    if start_over:
        argv.append("--start-over")
    dispatch(argv)


def list_configs() -> None:
    """The packaged training configs (names `probelab train --config` accepts) and their first comment line."""
    from ..resources import training_configs

    for name, path in training_configs().items():
        first = next((ln.lstrip("# ").strip() for ln in path.read_text(encoding="utf-8").splitlines()
                      if ln.startswith("#")), "")
        typer.echo(f"{name:32s} {first[:90]}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
