"""The ``probelab`` command line.

Commands live in ``probelab/commands/<topic>.py``; each module defines ``register(app)``.
:data:`COMMAND_MODULES` lists them (adding a command group is adding one module and one line).
Errors on bad input are :class:`~probelab.errors.ProbelabError`: printed as one ``error:`` line
with exit code 1, never a traceback (set ``PROBELAB_DEBUG=1`` to see one).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys

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
    "probelab.commands.lens", "probelab.commands.features",
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that ``finally`` blocks and atomic writers clean up."""


_terminated = False


def _on_sigterm(signum, frame) -> None:
    global _terminated
    _terminated = True
    raise Terminated()


def _bad_argv(args: list[str]) -> str | None:
    """The first argument that is not valid UTF-8 (Python keeps such bytes as lone surrogates)."""
    for a in args:
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            return a.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return None


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Exit codes: 0 success (and bare ``probelab``: help), 1 an error (one ``error:``
    line), 2 a usage error (click's message naming the option), 130 Ctrl-C, 143 SIGTERM."""
    from typer._click import exceptions as cx  # typer vendors click: its exceptions are not click's

    debug = os.environ.get("PROBELAB_DEBUG") == "1"
    args = list(sys.argv[1:] if argv is None else argv)
    bad = _bad_argv(args)
    if bad is not None:
        _fail(f"argument {bad!r} is not valid UTF-8 (check the shell's locale or the file name's encoding)", 2)
    _quiet_libraries()
    with contextlib.suppress(Exception):  # leftovers of killed runs (never fails a command)
        from .paths import clean_cache_leftovers

        clean_cache_leftovers()
    with contextlib.suppress(ValueError):  # not in the main thread (tests): keep the default handler
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rc = build_app()(args=args, standalone_mode=False, prog_name="probelab")
    except ProbelabError as e:
        if debug:
            raise
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except cx.NoArgsIsHelpError:  # bare `probelab` (or a bare group): the help was printed
        sys.exit(0)
    except cx.ClickException as e:  # usage errors: click's own message naming the option, exit 2
        e.show()
        sys.exit(e.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    except Terminated:
        _fail("terminated", 143)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as e:  # an unexpected failure still gets one line
        if type(e).__name__ == "InterruptedException":  # sae-lens' own SIGINT/SIGTERM handler
            _fail("terminated", 143) if _terminated else _fail("interrupted", 130)
        if debug:
            raise
        _fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (PROBELAB_DEBUG=1 for a traceback)")
    # standalone_mode=False: typer turns KeyboardInterrupt into Exit(130) and returns the code
    if rc == 130:
        _fail("terminated", 143) if _terminated else _fail("interrupted", 130)
    if isinstance(rc, int) and not isinstance(rc, bool) and rc != 0:
        sys.exit(rc)


if __name__ == "__main__":
    main()
