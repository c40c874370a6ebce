"""Where probelab's data files are: the built-in probe sets and the training configs.

The files live in the repository's top-level folders (``probes/*.jsonl``, ``training/configs/*.yaml``,
``training/accelerate/*.yaml``). A wheel carries a copy of them inside the package, under
``probelab/_bundled/`` (``setup.py`` copies them at build time; see the comment in ``pyproject.toml``).
Every lookup tries that bundled copy first and then the source checkout around the package, so the
same code works in an installed wheel, an editable install and a plain checkout. Environment variables
override each folder: ``PROBELAB_PROBES_DIR``, ``PROBELAB_CONFIGS_DIR``.

>>> probes_dir().joinpath("analogies.jsonl").is_file()
True
>>> training_config("tiny-test").name
'tiny-test.yaml'
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ProbelabError

PACKAGE = Path(__file__).resolve().parent
BUNDLED = PACKAGE / "_bundled"  # present in a built wheel only
CHECKOUT = PACKAGE.parent  # the repository root when probelab runs from a source checkout

# folder name -> (path inside the repository, path inside the wheel's _bundled/); setup.py reads this
# table too, so the two stay the same
FOLDERS = {
    "probes": "probes",
    "configs": "training/configs",
    "accelerate": "training/accelerate",
}
CONFIG_SUFFIXES = (".yaml", ".yml", ".toml")


def _folder(kind: str, env: str | None = None) -> Path:
    if env and os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    rel = FOLDERS[kind]
    for root in (BUNDLED, CHECKOUT):
        path = root / rel
        if path.is_dir():
            return path
    raise ProbelabError(f"probelab's {rel}/ folder is missing (looked in {BUNDLED} and {CHECKOUT}): "
                        "this installation is incomplete; reinstall probelab")


def probes_dir() -> Path:
    """The built-in probe sets folder (``$PROBELAB_PROBES_DIR`` overrides it)."""
    return _folder("probes", "PROBELAB_PROBES_DIR")


def training_configs_dir() -> Path:
    """The training configs folder (``$PROBELAB_CONFIGS_DIR`` overrides it)."""
    return _folder("configs", "PROBELAB_CONFIGS_DIR")


def accelerate_configs_dir() -> Path:
    """The Accelerate launch configs (FSDP on one node / several nodes)."""
    return _folder("accelerate")


def training_configs() -> dict[str, Path]:
    """Built-in training configs by name (file stem), sorted."""
    folder = training_configs_dir()
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in CONFIG_SUFFIXES and p.is_file()}


def training_config(name_or_path: str | os.PathLike) -> Path:
    """A config file: an existing path as given, else a built-in config's name (``tiny-test`` or
    ``tiny-test.yaml``). One-line error naming the built-in configs when neither exists."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    builtin = training_configs()
    key = path.stem if path.suffix in CONFIG_SUFFIXES and path.parent == Path(".") else str(name_or_path)
    if key in builtin:
        return builtin[key]
    raise ProbelabError(f"no config file or built-in config {str(name_or_path)!r}; built-in configs: "
                        f"{', '.join(builtin) or '(none found)'}")
