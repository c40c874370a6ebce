"""Find checkpoints and saved alignments on disk, and check a folder before loading it.

A *checkpoint* is a model folder with a ``config.json`` (what ``save_pretrained``, ``probelab
expand`` and the training scripts' final models write); its kind comes from the config's
``expansion`` (Control LLM) or ``cocomix`` block. A *saved alignment* is a folder written by
``probelab align`` (``metrics.json`` with ``alignment_score``).

>>> import tempfile, json, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> (d / "ck").mkdir(); _ = (d / "ck" / "config.json").write_text(json.dumps({"model_type": "llama", "expansion": {}}))
>>> [(f.kind, f.path.name) for f in discover([d])]
[('control', 'ck')]
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ProbelabError

MODEL_FILE = "config.json"
ALIGNMENT_FILE = "metrics.json"
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", "captures", "umap", "concept_labels"}
# an HF model config has at least one of these (a training run's config.json has neither)
MODEL_CONFIG_KEYS = ("model_type", "architectures")
# config.json keys that make a folder a special kind; anything else with a config.json is a plain model
KIND_KEYS = {"expansion": "control", "cocomix": "cocomix"}


@dataclass(frozen=True)
class Found:
    path: Path
    kind: str  # control | cocomix | model | alignment
    mtime: float

    @property
    def label(self) -> str:
        return f"{self.path.name} [{self.kind}] ({self.path.parent})"


def folder_kind(folder: Path) -> str | None:
    """``control`` / ``cocomix`` / ``model`` for a model folder, ``alignment`` for an alignment folder."""
    cfg = folder / MODEL_FILE
    if cfg.is_file():
        try:
            raw = json.loads(cfg.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(raw, dict) or not any(k in raw for k in MODEL_CONFIG_KEYS):
            return None  # e.g. a training run's own config.json: its model is in a subfolder
        return next((kind for key, kind in KIND_KEYS.items() if key in raw), "model")
    metrics = folder / ALIGNMENT_FILE
    if metrics.is_file():
        try:
            return "alignment" if "alignment_score" in json.loads(metrics.read_text()) else None
        except (OSError, json.JSONDecodeError):
            return None
    return None


def discover(roots, max_depth: int = 4, limit: int = 200, exclude=()) -> list[Found]:
    """Model and alignment folders under ``roots`` (newest first), not descending into what it finds
    nor into ``exclude``."""
    found: dict[Path, Found] = {}
    excluded = {Path(e).resolve() for e in exclude}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        base_depth = len(root.parts)
        for here, dirs, _files in os.walk(root):
            path = Path(here)
            if path.resolve() in excluded:
                dirs[:] = []
                continue
            kind = folder_kind(path)
            if kind is not None:
                found[path.resolve()] = Found(path, kind, path.stat().st_mtime)
                dirs[:] = []
                continue
            if len(path.parts) - base_depth >= max_depth:
                dirs[:] = []
                continue
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
    return sorted(found.values(), key=lambda f: -f.mtime)[:limit]


def check_checkpoint(path: str | Path) -> tuple[Path, str]:
    """``(folder, kind)`` of a checkpoint folder, or a one-line :class:`ProbelabError` saying what it is not."""
    raw = str(path).strip()
    if not raw:
        raise ProbelabError("no checkpoint folder given")
    folder = Path(raw).expanduser()
    if not folder.exists():
        raise ProbelabError(f"{folder} does not exist")
    if not folder.is_dir():
        raise ProbelabError(f"{folder} is a file, not a checkpoint folder")
    if (folder / "trainable.safetensors").is_file() and (folder / "state.json").is_file():
        raise ProbelabError(f"{folder} is a training-state checkpoint (trained weights only, no config.json);"
                            " pick the run's final model folder")
    kind = folder_kind(folder)
    if kind is None or kind == "alignment":
        what = "an alignment folder" if kind == "alignment" else "not a checkpoint folder"
        raise ProbelabError(f"{folder} is {what} (no {MODEL_FILE}); pick a folder written by save_pretrained,"
                            " `probelab expand` or a training run")
    return folder, kind


def describe_alignment(folder: str | Path) -> str:
    """A one-line title of a saved alignment: folder name, checkpoint, score."""
    folder = Path(folder)
    try:
        m = json.loads((folder / ALIGNMENT_FILE).read_text())
        return f"{folder.name}: {m.get('checkpoint', '?')} (score {float(m['alignment_score']):.3f})"
    except (OSError, ValueError, KeyError, TypeError):
        return folder.name
