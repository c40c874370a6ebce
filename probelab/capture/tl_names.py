"""TransformerLens names for probelab's residual stream, and a TL-shaped view of :class:`Captures`.

probelab numbers the residual stream the HF ``hidden_states`` way (index 0 = the input of block 0,
index i = the output of block i - 1, the last index before the final norm). TransformerLens names
the same tensors by hook:

====================  ==============================================================
resid index           TransformerLens hook names (same tensor)
====================  ==============================================================
0                     ``blocks.0.hook_resid_pre``
i, 0 < i < L          ``blocks.{i-1}.hook_resid_post`` and ``blocks.{i}.hook_resid_pre``
L (last block out)    ``blocks.{L-1}.hook_resid_post`` (before ``ln_final``)
====================  ==============================================================

:func:`to_tl_cache` returns a plain dict keyed by those names, shaped like TransformerLens'
``ActivationCache`` from ``run_with_cache``: ``[batch, pos, d_model]`` for one text of an ``all``
capture (batch 1), or for several texts of equal length; ``[n_texts, d_model]`` for ``last`` /
``mean`` captures (one state per text, no position axis). ``Captures.tl(name)`` reads one name.

>>> tl_resid_name(0), tl_resid_name(3), tl_resid_name(3, prefer="pre", n_layers=4)
('blocks.0.hook_resid_pre', 'blocks.2.hook_resid_post', 'blocks.3.hook_resid_pre')
>>> resid_index_of("blocks.2.hook_resid_post"), resid_index_of("blocks.3.hook_resid_pre")
(3, 3)
>>> sorted(tl_names_for(2).items())
[('blocks.0.hook_resid_post', 1), ('blocks.0.hook_resid_pre', 0), ('blocks.1.hook_resid_post', 2), ('blocks.1.hook_resid_pre', 1)]
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import CaptureError

_TL_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


def tl_resid_name(index: int, prefer: str = "post", n_layers: int | None = None) -> str:
    """The TransformerLens hook name of resid ``index``: ``blocks.{index-1}.hook_resid_post`` by default
    (``blocks.0.hook_resid_pre`` for index 0); ``prefer="pre"`` gives ``blocks.{index}.hook_resid_pre``
    where that block exists (``index < n_layers``)."""
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise CaptureError(f"a residual index is a whole number >= 0, got {index!r}")
    if prefer not in ("post", "pre"):
        raise CaptureError(f"prefer must be 'post' or 'pre', got {prefer!r}")
    if n_layers is not None and index > n_layers:
        raise CaptureError(f"residual index {index} is past the last block output ({n_layers})")
    if index == 0 or (prefer == "pre" and (n_layers is None or index < n_layers)):
        return f"blocks.{index}.hook_resid_pre"
    return f"blocks.{index - 1}.hook_resid_post"


def resid_index_of(name: str, n_layers: int | None = None) -> int:
    """The resid index a TransformerLens ``blocks.{i}.hook_resid_pre|post`` name stands for."""
    m = _TL_RESID.match(name or "")
    if not m:
        raise CaptureError(f"{name!r} is not a TransformerLens residual-stream hook; probelab maps "
                           "'blocks.<i>.hook_resid_pre' and 'blocks.<i>.hook_resid_post'")
    block, kind = int(m.group(1)), m.group(2)
    if n_layers is not None and block >= n_layers:
        raise CaptureError(f"{name!r}: the model has only {n_layers} blocks (0..{n_layers - 1})")
    return block + (1 if kind == "post" else 0)


def tl_names_for(n_layers: int, indices=None) -> dict[str, int]:
    """Every TransformerLens residual hook name of an ``n_layers``-block model (or of the given resid
    ``indices`` only) → its resid index. Two names share an index between blocks."""
    wanted = range(n_layers + 1) if indices is None else indices
    out: dict[str, int] = {}
    for i in wanted:
        if i < n_layers:
            out[f"blocks.{i}.hook_resid_pre"] = i
        if i > 0:
            out[f"blocks.{i - 1}.hook_resid_post"] = i
    return out


def _n_layers(caps, n_layers: int | None, stream: str) -> int:
    """The model's block count: given, from the capture's meta, or the highest resid index captured."""
    caps_stream(caps, stream)
    if n_layers is not None:
        return int(n_layers)
    meta_n = (caps.meta or {}).get("n_layers")
    return int(meta_n) if meta_n is not None else max(caps.layers.get("resid") or caps.layers[stream])


def read_tl(caps, name: str, stream: str = "resid", n_layers: int | None = None):
    """States of ``stream`` under a TransformerLens hook name: ``[n_texts, d]`` (``last`` / ``mean``) or,
    for an ``all`` capture, one ``[n_tokens_i, d]`` tensor per text."""
    index = resid_index_of(name, _n_layers(caps, n_layers, stream))
    layers = caps.layers[caps_stream(caps, stream)]
    if index not in layers:
        raise CaptureError(f"{name!r} is resid index {index}, which this capture does not hold; layers: {layers}")
    if caps.ragged:
        return [t[layers.index(index)] for t in caps.stream(stream)]
    return caps.layer(index, stream)


def caps_stream(caps, stream: str) -> str:
    caps.stream(stream)  # a one-line error for an unknown stream
    return stream


def to_tl_cache(caps, stream: str = "resid", text: int | None = None, n_layers: int | None = None) -> dict:
    """A dict ``{TL hook name: tensor}`` shaped like TransformerLens' ``ActivationCache``.

    ``all`` captures: ``text=i`` gives ``[1, n_tokens_i, d]``; without ``text`` every text must have
    the same number of tokens and the result is ``[n_texts, n_tokens, d]``. ``last`` / ``mean``
    captures: ``[n_texts, d]`` (``text=i``: ``[1, d]``).
    """
    layers = caps.layers[caps_stream(caps, stream)]
    n = _n_layers(caps, n_layers, stream)
    names = tl_names_for(n, [i for i in layers if i <= n])
    if caps.ragged:
        texts = caps.stream(stream)
        if text is None:
            lengths = {int(t.shape[1]) for t in texts}
            if len(lengths) != 1:
                raise CaptureError("the texts have different numbers of tokens; pick one with text=i "
                                   "(a TransformerLens cache of a batch is padded, probelab keeps real tokens only)")
            chosen = list(range(len(texts)))
        else:
            chosen = [_check_text(text, len(texts))]
        stacked = torch.stack([texts[i] for i in chosen], dim=1)  # [L, B, T, d]
        return {name: stacked[layers.index(i)] for name, i in names.items()}
    states = caps.stream(stream)  # [L, n_texts, d]
    if text is not None:
        t = _check_text(text, states.shape[1])
        states = states[:, t:t + 1]
    return {name: states[layers.index(i)] for name, i in names.items()}


def _check_text(text, count: int) -> int:
    if not isinstance(text, int) or isinstance(text, bool) or not 0 <= text < count:
        raise CaptureError(f"text must be an index 0..{count - 1}, got {text!r}")
    return text


def save_tl_cache(caps, path: str | Path, **kwargs) -> Path:
    """Write :func:`to_tl_cache` to one safetensors file (keys = TL hook names), atomically."""
    from safetensors.torch import save

    from ..paths import atomic_write_bytes

    cache = {k: v.clone().contiguous() for k, v in to_tl_cache(caps, **kwargs).items()}  # aliases share memory
    atomic_write_bytes(Path(path), save(cache, metadata={"format": "probelab.tl_cache"}))
    return Path(path)
