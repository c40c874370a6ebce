"""What the app starts on: model, SAE and the folders it searches, from env vars or query params.

``probelab app --model M`` sets ``PROBELAB_APP_MODEL``; a URL query parameter ``?model=tiny-llama``
overrides it for one browser tab (the tests use it to run every page on a tiny random model).

=====================  ==========================================================================
``PROBELAB_APP_MODEL``  base model (default: the embedded SmolLM2)
``PROBELAB_APP_SAE``    SAE for the concept and steering pages: ``default``, ``tiny`` or a folder
                        (default: ``tiny`` for the ``tiny-*`` models, else ``default``)
``PROBELAB_APP_ROOTS``  extra folders to search for checkpoints and saved alignments (``:``-separated)
``PROBELAB_APP_UMAP``   ``0`` turns the UMAP map off by default (it is on)
=====================  ==========================================================================

>>> s = AppSettings.from_env({"PROBELAB_APP_MODEL": "tiny-llama"})
>>> s.model, s.sae
('tiny-llama', 'tiny')
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

ENV_MODEL = "PROBELAB_APP_MODEL"
ENV_SAE = "PROBELAB_APP_SAE"
ENV_ROOTS = "PROBELAB_APP_ROOTS"
ENV_UMAP = "PROBELAB_APP_UMAP"


def default_sae_for(model: str) -> str:
    """The tiny random SAE for the tiny random models, probelab's trained SAE otherwise."""
    return "tiny" if model.startswith("tiny-") else "default"


@dataclass(frozen=True)
class AppSettings:
    model: str
    sae: str
    roots: tuple[Path, ...] = field(default_factory=tuple)
    umap: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, query: Mapping[str, str] | None = None) -> "AppSettings":
        from ..models import DEFAULT_MODEL
        from ..paths import cache_dir

        env = os.environ if env is None else env
        query = query or {}
        model = (query.get("model") or env.get(ENV_MODEL) or DEFAULT_MODEL).strip()
        sae = (query.get("sae") or env.get(ENV_SAE) or default_sae_for(model)).strip()
        extra = [Path(p).expanduser() for p in (env.get(ENV_ROOTS) or "").split(os.pathsep) if p.strip()]
        roots = tuple(dict.fromkeys([*extra, Path.cwd() / "runs", cache_dir()]))
        umap = (env.get(ENV_UMAP, "1").strip().lower() not in {"0", "false", "no", "off"})
        return cls(model=model, sae=sae, roots=roots, umap=umap)
