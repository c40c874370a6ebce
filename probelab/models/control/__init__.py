"""Control LLM (arXiv 2501.10979): expand a pretrained decoder with trainable copies of some blocks.

Public API::

    from probelab.models.control import ExpansionConfig, expand_model, save_control, load_control

    model = expand_model(base_model, ExpansionConfig(strategy="concat", interpolation="lerp",
                                                     num_expanded=6, divergence="mse", alpha=1.0))
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    loss = out.loss + out.divergence_loss    # train on this; log both terms
    save_control(model, "runs/lerp6", tokenizer)   # HF folder; probelab.load_model("runs/lerp6") reads it

**Forward contract.** ``model(...)`` returns a :class:`ControlLLMOutput`, a
``CausalLMOutputWithPast`` whose ``loss`` is the usual CE loss (``None`` without labels) and whose
extra ``divergence_loss`` is a scalar tensor: the alpha-weighted divergence between the two
branches, averaged over real (non-padding) tokens per merged layer, then over merged layers.
It is 0 when ``divergence="none"``, ``alpha=0``, or the strategy is ``stack``. With
``alpha="dynamic"`` each token's divergence is weighted by the interpolation weight (detached unless
``detach_alpha=False``; MoE with ``moe_divergence="routed"``: only routed tokens, by the soft gate).
Pass ``attention_mask`` so padding is excluded.

**Training.** :func:`expand_model` freezes everything pretrained (embeddings, every original
block, final norm, lm_head); only the expanded / inserted blocks and the interpolators have
``requires_grad``. Optimise ``[p for p in model.parameters() if p.requires_grad]``.

**Analysis.** ``probelab.capture(model, tok, texts)`` returns, besides ``resid``, the streams
``pretrained``, ``expanded``, ``merged`` and ``weight`` at the merged layers (layer index = block
position + 1, the ``resid`` convention; ``model.merged_layers`` lists them). At initialisation
pretrained == expanded == merged == resid there.

>>> from probelab.models.tiny import tiny_llama
>>> m = expand_model(tiny_llama(), ExpansionConfig(num_expanded=2))
>>> m.expansion.layers, m.merged_layers
([1, 3], [2, 4])
"""
from __future__ import annotations

from pathlib import Path

import torch

from ...errors import ModelNotFound, ProbelabError
from ..loading import register_folder_kind, save_hf_folder
from .config import DIVERGENCE_NAMES, GATE_INIT_NAMES, INTERPOLATOR_NAMES, MOE_DIVERGENCE_NAMES, PRESET_KNOBS, \
    PRESET_NAMES, PRESETS, STRATEGY_NAMES, ExpansionConfig, ExpansionError, expanded_layer_indices
from .divergence import DIVERGENCES, register_divergence
from .expand import check_expandable
from .interpolators import INTERPOLATORS, register_interpolator
from .layer import ControlLayer
from .merge import merge_lerp
from .modeling import ControlLLMConfig, ControlLLMForCausalLM, ControlLLMOutput, control_config_for, \
    register_auto_classes
from .strategies import STRATEGIES, register_strategy


def expand_model(model, config: ExpansionConfig | dict | None = None, **overrides) -> ControlLLMForCausalLM:
    """Expand an HF decoder-only causal LM in place and return it wrapped as a Control LLM.

    ``config`` is an :class:`ExpansionConfig` (or its dict); keyword overrides set single fields,
    e.g. ``expand_model(model, num_expanded=6, interpolation="dlerp")``. ``model`` itself is modified
    (its block list) and becomes ``result.model``; keep a separate copy if you need the original.
    Overriding ``preset`` re-derives every preset knob that is not overridden too.
    """
    base = config.to_dict() if isinstance(config, ExpansionConfig) else dict(config or {})
    if "preset" in overrides:
        base = {k: v for k, v in base.items() if k not in PRESET_KNOBS}
    cfg = ExpansionConfig.from_dict({**base, **overrides})
    if isinstance(model, ControlLLMForCausalLM):
        raise ExpansionError("the model is already a Control LLM")
    layers = check_expandable(model)
    cfg.resolve(len(layers))
    if not cfg.base_model:
        cfg.base_model = str(getattr(model.config, "_name_or_path", "") or "")
    control = ControlLLMForCausalLM(control_config_for(model, cfg), model=model)
    control.generation_config = getattr(model, "generation_config", control.generation_config)
    return control.train(model.training)


def save_control(model: ControlLLMForCausalLM, folder: str | Path, tokenizer=None, overwrite: bool = False) -> Path:
    """Write ``model`` (and ``tokenizer``) as an HF folder, atomically: config.json + safetensors."""
    if not isinstance(model, ControlLLMForCausalLM):
        raise ProbelabError(f"save_control expects a ControlLLMForCausalLM, got {type(model).__name__}")
    return save_hf_folder(model, folder, tokenizer, overwrite=overwrite)


def load_control(folder: str | Path, dtype: torch.dtype = torch.float32) -> ControlLLMForCausalLM:
    """Load a Control LLM folder written by :func:`save_control` (or ``save_pretrained``)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelNotFound(f"{folder} is not a model folder (no config.json)")
    try:
        model = ControlLLMForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True)
    except ProbelabError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise ProbelabError(f"cannot load Control LLM from {folder}: {str(e).splitlines()[0]}") from None
    return model.eval()


register_auto_classes()
register_folder_kind("expansion", load_control)

__all__ = [
    "ExpansionConfig", "ExpansionError", "expand_model", "save_control", "load_control", "ControlLLMForCausalLM",
    "ControlLLMConfig", "ControlLLMOutput", "ControlLayer", "expanded_layer_indices", "INTERPOLATORS",
    "DIVERGENCES", "STRATEGIES", "register_interpolator", "register_divergence", "register_strategy",
    "STRATEGY_NAMES", "INTERPOLATOR_NAMES", "DIVERGENCE_NAMES", "merge_lerp", "PRESETS", "PRESET_NAMES",
    "PRESET_KNOBS", "GATE_INIT_NAMES", "MOE_DIVERGENCE_NAMES",
]
