"""probelab: build and examine Control LLM and CoCoMix models.

The top-level names are imported on first use, so ``import probelab`` (and ``probelab --help``)
does not pay for torch and transformers until something needs them.

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
