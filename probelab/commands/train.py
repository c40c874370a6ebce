"""``probelab train``: run the continual-SFT recipe (``training/train_csft.py``) in this process.

For several processes use Accelerate directly (see docs/training.md).
"""
from __future__ import annotations

import runpy
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ProbelabError


def script_path() -> Path:
    path = Path(__file__).resolve().parents[2] / "training" / "train_csft.py"
    if not path.is_file():
        raise ProbelabError(f"{path} not found: `probelab train` runs from a source checkout of probelab")
    return path


def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="YAML/TOML config (training/configs/*.yaml)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="override one key: section.key=value"),
) -> None:
    """Continual SFT / pretraining: full, partial, stack, hybrid or Control LLM (one process)."""
    module = runpy.run_path(str(script_path()), run_name="probelab_train")
    argv = ["--config", str(config)]
    for item in set_ or []:
        argv += ["--set", item]
    module["main"](argv)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
