"""The ``probelab`` command line.

Commands live in ``probelab/commands/<topic>.py``; each module defines ``register(app)``.
:data:`COMMAND_MODULES` lists them (adding a command group is adding one module and one line).
Errors on bad input are :class:`~probelab.errors.ProbelabError`: printed as one ``error:`` line
with exit code 1, never a traceback (set ``PROBELAB_DEBUG=1`` to see one).
"""
from __future__ import annotations

import importlib
import os
import sys

import click
import typer

from .errors import ProbelabError

COMMAND_MODULES = [
    "probelab.commands.models",
    "probelab.commands.probes",
    "probelab.commands.capture",
    "probelab.commands.demo",
    "probelab.commands.expand",
    "probelab.commands.align",
    "probelab.commands.steer",
    "probelab.commands.sae", "probelab.commands.concepts",
    "probelab.commands.app",
    "probelab.commands.train",
]

app = typer.Typer(
    name="probelab",
    help="Build and examine Control LLM and CoCoMix models: capture, probe, align, concepts, train.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def build_app() -> typer.Typer:
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(app)
    return app


def _fail(message: str, code: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _quiet_libraries() -> None:
    """Library progress bars and warnings that say nothing to a probelab user.

    Set through environment variables that transformers and huggingface_hub read when they are
    first imported, so ``probelab --help`` imports neither (a value the user set is kept).
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")     # transformers' logger level
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")   # transformers' own bars follow this one
    if "transformers" in sys.modules:  # imported already (main() called from Python): too late for the env
        logging = sys.modules["transformers"].utils.logging
        logging.set_verbosity_error()
        logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> None:
    debug = os.environ.get("PROBELAB_DEBUG") == "1"
    _quiet_libraries()
    try:
        build_app()(args=argv, standalone_mode=False)
    except ProbelabError as e:
        if debug:
            raise
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:  # usage errors: click prints its own one-line message
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as e:  # an unexpected failure still gets one line
        if debug:
            raise
        _fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (PROBELAB_DEBUG=1 for a traceback)")


if __name__ == "__main__":
    main()
