"""The surgery: turn a plain HF decoder into its expanded structure, in place.

Works on any HF decoder whose blocks sit in a ``ModuleList`` found by
:func:`probelab.capture.decoder_layers` (Llama family, Qwen2, Mistral, ...): blocks are deep-copied
and re-indexed, never re-implemented. Walking the original blocks in order:

- a ``concat`` point i becomes a :class:`ControlLayer` (block i frozen ‖ copy of block i);
- a ``stack`` point i keeps block i and inserts a copy after it with the attention output
  projection and the MLP down projection zeroed (the inserted block adds 0 to the residual);
- every other block stays as it is.

Indices: the L' blocks on the main path get ``layer_idx`` 0..L'-1 (their KV cache slots), the
j-th concat copy gets L' + j, so a cache sized for L' + (number of concat copies) layers serves both
branches. The inner model's config is updated to the main path (``num_hidden_layers = L'`` and
``layer_types``), so the HF forward loop runs unchanged.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ...capture import decoder_layers
from .config import ExpansionConfig, ExpansionError
from .interpolators import build_interpolator
from .layer import ControlLayer, ControlState
from .strategies import CONCAT, STACK, operations_for

OUTPUT_PROJECTIONS = ("o_proj", "down_proj")  # zeroed in a stacked copy (LLaMA-Pro identity init)


@dataclass
class Structure:
    """What the surgery built, for freezing, recording and the KV cache layout."""

    num_main: int            # L': blocks on the main path (KV cache slots 0..L'-1)
    control_layers: list[ControlLayer]
    stacked: list[nn.Module]

    @property
    def num_attention_layers(self) -> int:
        """KV cache slots the model needs: main-path blocks + concat copies."""
        return self.num_main + len(self.control_layers)

    def trainable_modules(self) -> list[nn.Module]:
        return [c.expanded for c in self.control_layers] + [c.interpolator for c in self.control_layers] \
            + list(self.stacked)


def _set_layer_idx(block: nn.Module, idx: int) -> None:
    for m in block.modules():
        if isinstance(getattr(m, "layer_idx", None), int):
            m.layer_idx = idx


def zero_output_projections(block: nn.Module) -> None:
    """Zero the attention output and MLP down projections, so the block returns its input unchanged."""
    found = [m for name, m in block.named_modules()
             if name.rsplit(".", 1)[-1] in OUTPUT_PROJECTIONS and isinstance(m, nn.Linear)]
    if len(found) < 2:
        raise ExpansionError(f"stack expansion needs blocks with {' and '.join(OUTPUT_PROJECTIONS)} linears; "
                             f"{type(block).__name__} has none")
    with torch.no_grad():
        for m in found:
            m.weight.zero_()
            if m.bias is not None:
                m.bias.zero_()


def check_expandable(model: nn.Module) -> nn.ModuleList:
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        raise ExpansionError(f"{type(model).__name__} is not a decoder-only HF causal LM")
    layers = decoder_layers(model)
    if any(isinstance(b, ControlLayer) for b in layers):
        raise ExpansionError("the model is already expanded")
    return layers


def layout(cfg: ExpansionConfig) -> tuple[list[int], list[int]]:
    """Original block index of each main-path block, and of each concat copy (in cache-slot order)."""
    ops = dict(zip(cfg.layers, operations_for(cfg.strategy, len(cfg.layers))))
    main, copies = [], []
    for i in range(cfg.num_base_layers):
        main.append(i)
        if ops.get(i) == STACK:
            main.append(i)
        elif ops.get(i) == CONCAT:
            copies.append(i)
    return main, copies


def attention_layer_types(cfg: ExpansionConfig, base_types) -> list:
    """``layer_types`` for a KV cache covering main-path blocks then concat copies."""
    main, copies = layout(cfg)
    return [base_types[i] for i in main + copies]


def copy_block(block: nn.Module) -> nn.Module:
    """A deep copy of ``block`` that shares the original's config object, so that switching the
    model's attention implementation (``set_attn_implementation``) reaches the copy too."""
    shared = {id(m.config): m.config for m in block.modules() if hasattr(m, "config")}
    return copy.deepcopy(block, memo=shared)


def build_structure(model: nn.Module, cfg: ExpansionConfig, state: ControlState) -> Structure:
    """Apply ``cfg`` to ``model`` in place (``cfg`` must be resolved for its layer count)."""
    layers = check_expandable(model)
    config = model.config
    if cfg.num_base_layers != len(layers):
        raise ExpansionError(f"expansion was resolved for {cfg.num_base_layers} layers, the model has {len(layers)}")
    ops = dict(zip(cfg.layers, operations_for(cfg.strategy, len(cfg.layers))))
    types = list(config.layer_types) if isinstance(getattr(config, "layer_types", None), (list, tuple)) else None
    hidden = config.hidden_size

    plan: list[tuple[str, nn.Module, int]] = []  # (kind, block, original index) along the main path
    for i, block in enumerate(layers):
        plan.append((ops.get(i, "plain"), block, i))
        if ops.get(i) == STACK:
            new = copy_block(block)
            zero_output_projections(new)
            plan.append(("stacked", new, i))
    assert [orig for _, _, orig in plan] == layout(cfg)[0]

    num_main = len(plan)
    new_blocks, controls, stacked = [], [], []
    state_like = next(layers[0].parameters())
    for pos, (kind, block, orig) in enumerate(plan):
        _set_layer_idx(block, pos)
        if kind == CONCAT:
            expanded = copy_block(block)
            _set_layer_idx(expanded, num_main + len(controls))
            interp = build_interpolator(cfg, hidden).to(device=state_like.device, dtype=state_like.dtype)
            for m in interp.modules():  # initialised by its constructor: HF's random init must skip it
                m._is_hf_initialized = True
            block = ControlLayer(block, expanded, interp, pos, state)
            controls.append(block)
        elif kind == "stacked":
            stacked.append(block)
        new_blocks.append(block)

    del layers[:]
    layers.extend(new_blocks)
    if types is not None:
        config.layer_types = [types[orig] for _, _, orig in plan]
    config.num_hidden_layers = num_main
    return Structure(num_main, controls, stacked)


def freeze_for_training(model: nn.Module, structure: Structure, cfg: ExpansionConfig) -> None:
    """Only the expanded / inserted blocks and the interpolators train; everything pretrained is frozen."""
    model.requires_grad_(False)
    for m in structure.trainable_modules():
        m.requires_grad_(True)
    if cfg.freeze_interpolator:  # the interpolation factor: Lerp / Plerp logit, the gates' bias
        for c in structure.control_layers:
            for name in getattr(c.interpolator, "freezable", ()):
                c.interpolator.get_parameter(name).requires_grad_(False)
