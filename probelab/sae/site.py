"""Where an SAE reads the model: hook names ↔ probelab residual-stream indices.

SAEs name their input site by a *hook name*. Two conventions matter:

- HF module paths, used by sae-lens' ``AutoModelForCausalLM`` wrapper: ``model.layers.12`` is the
  output of block 12 (any ``<...>.layers.<i>`` or ``transformer.h.<i>`` path works the same way);
- TransformerLens names: ``blocks.12.hook_resid_post`` (output of block 12) and
  ``blocks.12.hook_resid_pre`` (input of block 12).

:mod:`probelab.capture` numbers the residual stream the HF ``hidden_states`` way: index 0 is the
input of block 0, index ``i`` the output of block ``i - 1``. So ``model.layers.12`` is resid index 13.

>>> resid_index("model.layers.12"), resid_index("blocks.12.hook_resid_pre")
(13, 12)
>>> hf_hook_name(13), tl_hook_name(13)
('model.layers.12', 'blocks.12.hook_resid_post')
>>> hook_names("blocks.12.hook_resid_post")
{'resid_index': 13, 'hf': 'model.layers.12', 'tl': 'blocks.12.hook_resid_post'}

An SAE saved by sae-lens under a TransformerLens name therefore reads the same tensor of the HF model
as one saved under the HF name: probelab places both by their resid index.
"""
from __future__ import annotations

import re

from ..errors import ProbelabError


class SAESiteError(ProbelabError):
    """A hook name probelab cannot place on the residual stream, or an SAE that does not fit a model."""


_PATTERNS: list[tuple[re.Pattern, int]] = [
    (re.compile(r"^blocks\.(\d+)\.hook_resid_post$"), 1),
    (re.compile(r"^blocks\.(\d+)\.hook_resid_pre$"), 0),
    (re.compile(r"^(?:[A-Za-z_][\w]*\.)*layers\.(\d+)$"), 1),
    (re.compile(r"^(?:[A-Za-z_][\w]*\.)*h\.(\d+)$"), 1),
]


def resid_index(hook_name: str) -> int:
    """The :mod:`probelab.capture` residual index an SAE with this hook name reads."""
    for pattern, offset in _PATTERNS:
        m = pattern.match(hook_name or "")
        if m:
            return int(m.group(1)) + offset
    raise SAESiteError(
        f"hook {hook_name!r} is not a residual-stream site; probelab supports 'model.layers.<i>', "
        "'blocks.<i>.hook_resid_post' and 'blocks.<i>.hook_resid_pre'"
    )


def tl_hook_name(index: int) -> str:
    """The TransformerLens hook name of residual index ``index``: ``blocks.{index-1}.hook_resid_post``
    (``blocks.0.hook_resid_pre`` for index 0)."""
    if not isinstance(index, int) or index < 0:
        raise SAESiteError(f"a residual index is a whole number >= 0, got {index!r}")
    return "blocks.0.hook_resid_pre" if index == 0 else f"blocks.{index - 1}.hook_resid_post"


def hook_names(hook_name: str) -> dict:
    """Both names of the site an SAE with ``hook_name`` reads: ``{"resid_index", "hf", "tl"}``
    (``hf`` is None for index 0, which has no block-output module)."""
    index = resid_index(hook_name)
    return {"resid_index": index, "hf": hf_hook_name(index) if index >= 1 else None, "tl": tl_hook_name(index)}


def hf_hook_name(index: int) -> str:
    """The sae-lens ``AutoModelForCausalLM`` hook name for residual index ``index`` (>= 1)."""
    if index < 1:
        raise SAESiteError("residual index 0 (the embeddings) has no block-output hook; use index >= 1")
    return f"model.layers.{index - 1}"
