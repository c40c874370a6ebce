"""``probelab app``: the Streamlit app (alignment, concepts, steering) on 127.0.0.1."""
from __future__ import annotations

import os
from typing import List, Optional

import typer

from . import options


def app_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (anything but localhost prints a warning)"),
    port: int = typer.Option(8501, "--port", min=1, max=65535, help="port to listen on"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="base model the pages start on (default: the embedded SmolLM2)"),
    sae: Optional[str] = typer.Option(None, "--sae", help="SAE for the concepts/steering pages: default | tiny | a folder"),
    roots: List[str] = typer.Option([], "--search", help="extra folder to search for checkpoints and alignments (repeatable)"),
    device: str = options.device_option(),
    dtype: str = options.dtype_option(),
) -> None:
    """Start the app: per-layer alignment of checkpoints, per-token concepts, steering."""
    from ..app_support import launch, settings

    script = launch.app_script()
    warning = launch.exposure_warning(host)
    if warning:
        typer.echo(warning, err=True)
    launch.check_port(host, port)
    env = dict(os.environ)
    env["PROBELAB_DEVICE"], env["PROBELAB_DTYPE"] = device, dtype  # the server's pages load models with these
    if model:
        env[settings.ENV_MODEL] = model
    if sae:
        env[settings.ENV_SAE] = sae
    if roots:
        env[settings.ENV_ROOTS] = os.pathsep.join(roots)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"probelab app: http://{shown}:{port} (Ctrl-C to stop)", err=True)
    argv = launch.streamlit_argv(script, host, port)
    code = launch.serve(argv, env)  # Ctrl-C / SIGTERM stop the server within launch.STOP_GRACE_S seconds
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("app")(app_cmd)
