"""Where hidden states come from: a model given by name, folder or in memory, captured once and cached.

:func:`side_states` returns the last-token and mean-token states of every stream of a model for a
probe set, from one forward pass (``select="all"`` then reduced here), through the
content-addressed cache: a cache hit never loads the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ProbelabError
from . import cache

CAPTURE_VERSION = 2  # bump when the reduction below changes (2: mean leaves out the first token, any tokenizer)


@dataclass
class ModelSource:
    """A model to capture: a registered name, a local folder, or an in-memory ``(model, tokenizer)``."""
    label: str
    folder: Path | None = None
    pair: tuple | None = None
    name: str | None = None
    device: str = "auto"  # where load() puts the model, and its dtype (probelab.models.devices)
    dtype: str = "auto"
    _loaded: tuple | None = field(default=None, repr=False)

    def dtype_key(self) -> str:
        """The dtype the states are computed in (part of the cache key: bf16 states differ from fp32)."""
        from ..models.devices import model_dtype, resolve_device, resolve_dtype

        if self.pair is not None:
            return str(model_dtype(self.pair[0]))
        return str(resolve_dtype(self.dtype, resolve_device(self.device)))

    def fingerprint(self) -> str:
        if self.folder is not None:
            return cache.folder_fingerprint(self.folder)
        model, tok = self.load()
        return cache.key("memory", cache.model_fingerprint(model), cache.tokenizer_fingerprint(tok))

    def load(self) -> tuple:
        if self._loaded is None:
            if self.pair is not None:
                self._loaded = self.pair
            else:
                from ..models import load_model

                self._loaded = load_model(self.name if self.folder is None else self.folder, device=self.device,
                                          dtype=self.dtype)
        return self._loaded


def resolve_source(spec, device: str = "auto", dtype: str = "auto") -> ModelSource:
    """Turn a name, a path or a ``(model, tokenizer)`` tuple into a :class:`ModelSource`
    (``device`` / ``dtype``: where a name or a path is loaded; an in-memory model stays where it is)."""
    src = _resolve_source(spec)
    src.device, src.dtype = str(device), str(dtype)
    return src


def _resolve_source(spec) -> ModelSource:
    if isinstance(spec, tuple) and len(spec) == 2:
        model = spec[0]
        label = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        return ModelSource(label=f"{label} (in memory)", pair=spec)
    from ..models import MODELS

    key = str(spec)
    if key in MODELS:
        m = MODELS[key]
        if m.source == "embedded":
            from ..models.embedded import materialize_embedded

            return ModelSource(label=key, folder=materialize_embedded(key), name=key)
        return ModelSource(label=key, name=key)
    path = Path(key).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(label=key, folder=path)
    return ModelSource(label=key, name=key)  # load_model reports what is wrong with it


def _reduce(per_text: list[np.ndarray], skip_first: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """``[L, T_i, d]`` per text → last-token and mean-token states ``[L, N, d]``; the mean leaves out each
    text's first token (the attention sink, whether or not it is a BOS: ``probelab.capture.hf``) unless
    it is the only one."""
    last = np.stack([t[:, -1] for t in per_text], axis=1)
    mean = np.stack([(t[:, 1:] if s and t.shape[1] > 1 else t).mean(axis=1)
                     for t, s in zip(per_text, skip_first)], axis=1)
    return last, mean


def capture_arrays(model, tok, texts: list[str], batch_size: int = 16, progress: bool | None = False):
    """Capture every stream of ``model`` on ``texts`` in one pass; return arrays and a header."""
    from ..capture import capture

    caps = capture(model, tok, texts, select="all", batch_size=batch_size, progress=progress)
    skip = [True] * len(caps.tokens)  # the same mean rule as capture(select="mean")
    arrays: dict[str, np.ndarray] = {}
    for stream in caps.streams:
        per_text = [t.float().numpy() for t in caps.states[stream]]
        last, mean = _reduce(per_text, skip)
        arrays[f"{stream}/last"], arrays[f"{stream}/mean"] = last, mean
    cfg = getattr(model, "config", None)
    meta = {
        "layers": {s: [int(x) for x in v] for s, v in caps.layers.items()},
        "tokens": caps.tokens,
        "hidden_size": int(getattr(cfg, "hidden_size", arrays["resid/last"].shape[-1])),
        "num_layers": len(caps.layers.get("resid", [])) - 1,
        "vocab_size": len(tok),
        "expansion": _expansion_info(cfg),
    }
    return arrays, meta


def _expansion_info(cfg) -> dict | None:
    exp = getattr(cfg, "expansion", None)
    if exp is None:
        return None
    if hasattr(exp, "to_dict"):
        exp = exp.to_dict()
    return exp if isinstance(exp, dict) else {"value": str(exp)}


@dataclass
class SideStates:
    """Captured states of one model: ``arrays["<stream>/<last|mean>"]`` are ``[L, N, d]``."""
    source: ModelSource
    arrays: dict[str, np.ndarray]
    meta: dict
    cached: bool

    def layers(self, stream: str) -> list[int]:
        return self.meta["layers"].get(stream, [])

    def get(self, stream: str, token: str) -> np.ndarray:
        return self.arrays[f"{stream}/{token}"]


def side_states(source: ModelSource, texts: list[str], use_cache: bool = True, batch_size: int = 16,
                progress: bool | None = False) -> SideStates:
    """States of ``source`` on ``texts``, from the cache when possible."""
    k = cache.key("capture", CAPTURE_VERSION, source.fingerprint(), source.dtype_key(), texts) if use_cache else None
    if k is not None:
        hit = cache.load_arrays("captures", k)
        if hit is not None:
            return SideStates(source, hit[0], hit[1], cached=True)
    model, tok = source.load()
    arrays, meta = capture_arrays(model, tok, texts, batch_size=batch_size, progress=progress)
    if k is not None:
        cache.save_arrays("captures", k, arrays, meta)
    return SideStates(source, arrays, meta, cached=False)


def check_finite(x: np.ndarray, side: str, layers: list[int], texts: list[str]) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        li, pi, _ = np.argwhere(bad)[0]
        raise ProbelabError(f"the {side} hidden states contain NaN/inf (layer {layers[li]}, probe {texts[pi]!r});"
                            " the checkpoint is broken or overflowed in this dtype")
