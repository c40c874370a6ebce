"""probelab: build and examine Control LLM and CoCoMix models.

The top-level names (``load_model``, ``capture``, ...) are imported on first use. ``import probelab``
itself registers probelab's model types with transformers' Auto classes (it imports
:mod:`probelab.models`, hence torch and transformers), so a saved Control LLM or CoCoMix folder
loads with ``AutoModelForCausalLM.from_pretrained(folder)``. The one exception is the probelab
command line starting up (:func:`_cli_starting`): there nothing heavy is imported, so ``probelab
--help`` stays fast, and the commands that load a model import :mod:`probelab.models`, which
registers then.

>>> import probelab
>>> model, tok = probelab.load_model("tiny-llama")
>>> caps = probelab.capture(model, tok, ["king is to queen", "man is to woman"])
>>> tuple(caps.stream("resid").shape)
(5, 2, 64)
"""
from __future__ import annotations

import importlib
import sys
import types

from .errors import ProbelabError

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily by __getattr__)
_LAZY = {
    "load_model": "probelab.models",
    "capture": "probelab.capture",
    "Captures": "probelab.capture",
    "load_probes": "probelab.probes",
    "lens": "probelab.analysis.lens",
}
__all__ = [*_LAZY, "ProbelabError", "__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'probelab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """``probelab.capture`` is the function even after the subpackage of the same name is imported
    (the import system sets a package's attribute to each submodule it loads)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return  # the submodule stays reachable through sys.modules
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

# Modules whose import, when it is what brings probelab in, means the command line is starting.
_CLI_MODULES = ("probelab.cli", "probelab.app.server")  # light entry points (the app server imports torch in a thread)


def _cli_starting() -> bool:
    """True when this ``import probelab`` happens because the command line is starting.

    The test is explicit: is ``probelab.cli`` (or the app server, :mod:`probelab.app.server`, which imports
    the heavy modules in a background thread) the module being imported right now? That covers the
    ``probelab`` console script (``from probelab.cli import main``), ``python -m probelab.cli`` and
    any ``from probelab.cli import ...``. The import system brings in the parent package first from
    ``importlib._bootstrap._find_and_load_unlocked(name=...)`` (``runpy._get_module_details(mod_name=...)``
    for ``-m``), so one of the frames below this one carries the submodule's name.
    """
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code.co_name
        if code in ("_find_and_load_unlocked", "_get_module_details"):
            name = frame.f_locals.get("name" if code == "_find_and_load_unlocked" else "mod_name")
            if name in _CLI_MODULES:
                return True
        frame = frame.f_back
    return False


if not _cli_starting():
    from . import models as _models  # noqa: E402  registers the Auto classes (probelab.models)
