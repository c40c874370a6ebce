"""``ControlLLMForCausalLM``: an HF causal LM expanded with Control LLM layers.

It wraps the (expanded, in place) base model as ``self.model`` — any HF decoder-only causal LM —
and adds what the base does not have: the divergence loss next to the CE loss, a recorder hook
for the branch streams, and a KV cache with a slot for every attention (both branches).

Persisted as a normal HF folder: ``config.json`` has ``model_type: "control_llm"``, the original
base config under ``base_config`` and the :class:`ExpansionConfig` under ``expansion``; weights in
safetensors. Importing probelab registers the config and model with ``AutoConfig`` /
``AutoModelForCausalLM``, so ``AutoModelForCausalLM.from_pretrained(folder)`` loads it without
``trust_remote_code``.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Iterator

import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, GenerationMixin, PreTrainedConfig, \
    PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import CausalLMOutputWithPast

from ...capture import decoder_layers
from .config import ExpansionConfig, ExpansionError
from .divergence import build_divergence
from .expand import attention_layer_types, build_structure, freeze_for_training
from .layer import ControlLayer, ControlState

MODEL_TYPE = "control_llm"


class ControlLLMConfig(PreTrainedConfig):
    """``base_config``: the base model's config before expansion; ``expansion``: an ExpansionConfig dict."""

    model_type = MODEL_TYPE
    sub_configs_defaults = {"base_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    base_config: dict | PreTrainedConfig | None = None
    expansion: dict | None = None

    @property
    def expansion_config(self) -> ExpansionConfig:
        return ExpansionConfig.from_dict(dict(self.expansion or {}))

    def attention_config(self) -> PreTrainedConfig:
        """The base config with one layer per attention (main path + concat copies): sizes KV caches."""
        exp = self.expansion_config
        cfg = copy.deepcopy(self.base_config)
        types = getattr(cfg, "layer_types", None)
        if isinstance(types, (list, tuple)):
            cfg.layer_types = attention_layer_types(exp, list(types))
            cfg.num_hidden_layers = len(cfg.layer_types)
        else:
            from .expand import layout

            main, copies = layout(exp)
            cfg.num_hidden_layers = len(main) + len(copies)
        return cfg

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        """Generation reads the text config to size its KV cache: give it one layer per attention."""
        return self.attention_config()


@dataclass
class ControlLLMOutput(CausalLMOutputWithPast):
    """``loss`` is the CE loss (when labels are given); ``divergence_loss`` the alpha-weighted divergence."""

    divergence_loss: torch.FloatTensor | None = None


class ControlLLMForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = ControlLLMConfig
    base_model_prefix = "control"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: ControlLLMConfig, model: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.expansion = config.expansion_config
        if model is None:
            model = AutoModelForCausalLM.from_config(copy.deepcopy(config.base_config))
        self.model = model
        self._state = ControlState(build_divergence(self.expansion), self.expansion.alpha,
                                   detach_alpha=self.expansion.detach_alpha,
                                   moe_divergence=self.expansion.moe_divergence)
        self._structure = build_structure(model, self.expansion, self._state)
        self.freeze_pretrained()
        self.post_init()
        # the blocks (copies included: they share the inner config) run the inner model's attention;
        # the wrapper's config says the same, so switching it later starts from the truth
        self.config._attn_implementation = model.config._attn_implementation

    def freeze_pretrained(self) -> "ControlLLMForCausalLM":
        """requires_grad only on expanded / inserted blocks and interpolators (what expansion sets up)."""
        freeze_for_training(self, self._structure, self.expansion)
        return self

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # loading materialises new parameters (requires_grad=True): restore the Control LLM freezing
        return super().from_pretrained(*args, **kwargs).freeze_pretrained()

    # ---- accessors ---------------------------------------------------------------------------
    @property
    def control_layers(self) -> list[ControlLayer]:
        """The concat layers (pretrained ‖ expanded → interpolator), in depth order."""
        return [b for b in decoder_layers(self.model) if isinstance(b, ControlLayer)]

    @property
    def merged_layers(self) -> list[int]:
        """Stream layer indices (``resid`` convention) where branch streams are recorded."""
        return [c.index + 1 for c in self.control_layers]

    @property
    def stacked_layers(self) -> list[int]:
        """Positions in the block list of blocks inserted by the stack strategy."""
        ids = {id(m) for m in self._structure.stacked}
        return [i for i, b in enumerate(decoder_layers(self.model)) if id(b) in ids]

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.model.get_output_embeddings()

    def get_decoder(self):
        return self.model.get_decoder()

    def new_cache(self) -> DynamicCache:
        """An empty KV cache with a slot for every attention of both branches."""
        return DynamicCache(config=self.config.attention_config())

    # ---- recorder protocol -------------------------------------------------------------------
    @contextlib.contextmanager
    def attach_recorder(self, recorder) -> Iterator[None]:
        """While attached, each concat layer puts ``pretrained``, ``expanded``, ``merged`` ([B, T, d]) and
        ``weight`` ([B, T], the expanded branch's interpolation weight) at layer index + 1."""
        previous = self._state.recorder
        self._state.recorder = recorder
        try:
            yield
        finally:
            self._state.recorder = previous

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                labels=None, use_cache=None, output_hidden_states=None, return_dict=None, **kwargs) -> ControlLLMOutput:
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        if use_cache is None:
            use_cache = bool(getattr(self.config.base_config, "use_cache", True)) and not self.training
        if use_cache and cache is None:
            cache = self.new_cache()
        self._state.begin(attention_mask)
        with self._hidden_states(bool(output_hidden_states)) as hidden:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache, **kwargs)
        device = out.logits.device
        result = ControlLLMOutput(loss=out.loss, logits=out.logits, cache=getattr(out, "cache", None),
                                  hidden_states=tuple(hidden) if output_hidden_states else None,
                                  attentions=getattr(out, "attentions", None),
                                  divergence_loss=self._state.divergence_loss(device))
        self._state.terms = []
        return result if return_dict is not False else result.to_tuple()

    @contextlib.contextmanager
    def _hidden_states(self, wanted: bool):
        """HF ``output_hidden_states`` semantics (embeddings, each block's output, last one after the final norm),
        collected with hooks on the block list: the inner model's own collector would also see both branches."""
        if not wanted:
            yield None
            return
        layers = decoder_layers(self.model)
        states: list = [None] * (len(layers) + 1)

        def first(x):
            return x[0] if isinstance(x, (tuple, list)) else x

        handles = [layers[0].register_forward_pre_hook(
            lambda _m, args, kw: states.__setitem__(0, args[0] if args else kw["hidden_states"]), with_kwargs=True)]
        for i, block in enumerate(layers):
            handles.append(block.register_forward_hook(lambda _m, _a, out, i=i: states.__setitem__(i + 1, first(out))))
        handles.append(self.model.get_decoder().register_forward_hook(
            lambda _m, _a, out: states.__setitem__(len(layers), out.last_hidden_state)))
        try:
            yield states
        finally:
            for h in handles:
                h.remove()


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` know ``model_type: control_llm`` (idempotent)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if MODEL_TYPE not in CONFIG_MAPPING:
        AutoConfig.register(MODEL_TYPE, ControlLLMConfig)
        AutoModelForCausalLM.register(ControlLLMConfig, ControlLLMForCausalLM)


def control_config_for(model: PreTrainedModel, expansion: ExpansionConfig) -> ControlLLMConfig:
    base = copy.deepcopy(model.config)
    if getattr(base, "model_type", None) == MODEL_TYPE:
        raise ExpansionError("the model is already a Control LLM")
    return ControlLLMConfig(base_config=base, expansion=expansion.to_dict(),
                            tie_word_embeddings=bool(getattr(base, "tie_word_embeddings", False)))
