"""The CoCoMix student: a Llama-family decoder whose upper blocks run on tokens interleaved with concepts.

Forward pass (paper Fig. 1), with ``L = insert_layer``:

1. embed the tokens and run blocks ``0..L-1`` as usual (sequence length T);
2. predict concept logits ``z_t`` from ``h_t`` and compress their TopK into a vector ``c_t``;
3. interleave ``h_1, c_1, ..., h_T, c_T`` and run blocks ``L..`` under a causal mask (length 2T);
4. read the next-token logits from the concept slots.

The blocks, norms, rotary embedding and embeddings are transformers' own ``LlamaModel`` modules,
called one by one; nothing in transformers is copied or patched. A KV cache (``DynamicCache``)
holds T entries in the lower blocks and 2T in the upper ones.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaPreTrainedModel

from ...capture.hf import position_ids_from_mask
from ...errors import ProbelabError
from .compress import ConceptCompressor
from .config import CoCoMixConfig
from .interleave import causal_mask, concept_slots, double, for_attention, interleave, token_slots
from .loss import cocomix_loss
from .predictor import ConceptPredictor
from .steering import scale_concepts

# transformers renamed the blocks' cache argument (past_key_values -> cache); use whichever it takes.
_CACHE_KW = "cache" if "cache" in inspect.signature(LlamaDecoderLayer.forward).parameters else "past_key_values"


class CoCoMixLlamaConfig(LlamaConfig):
    """A CoCoMix student's HF config: a ``LlamaConfig`` with its ``cocomix`` dict, saved with
    ``model_type: cocomix`` so ``AutoModelForCausalLM`` (once probelab is imported) maps the folder to
    :class:`CoCoMixForCausalLM`. It adds no field of its own."""

    model_type = "cocomix"


@dataclass
class CoCoMixOutput:
    """What a forward pass returns. Shapes: B texts, T new tokens, V vocab, C concepts, k TopK."""

    logits: torch.Tensor  # [B, T, V] next-token logits (read from the concept slots)
    concept_logits: torch.Tensor  # [B, T, C] predicted concept logits z (after any steering)
    concept_ids: torch.Tensor  # [B, T, k] the TopK concepts compressed into c_t
    loss: torch.Tensor | None = None  # NTP + lambda * concept (when labels are given)
    ntp_loss: torch.Tensor | None = None
    concept_loss: torch.Tensor | None = None
    cache: object | None = None


class CoCoMixForCausalLM(LlamaPreTrainedModel):
    """A CoCoMix language model. ``config`` is a ``LlamaConfig`` carrying a ``cocomix`` dict.

    >>> from probelab.models.cocomix import tiny_cocomix
    >>> m = tiny_cocomix()
    >>> out = m(torch.tensor([[1, 2, 3]]))
    >>> tuple(out.logits.shape), tuple(out.concept_ids.shape)
    ((1, 3, 259), (1, 3, 4))
    """

    config_class = CoCoMixLlamaConfig
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _no_split_modules = ["LlamaDecoderLayer"]

    def __init__(self, config: LlamaConfig):
        if type(config) is LlamaConfig:  # a plain LlamaConfig (or a folder saved as model_type llama)
            config.__class__ = CoCoMixLlamaConfig  # same fields; only the saved model_type changes
        super().__init__(config)
        block = getattr(config, "cocomix", None)
        if block is None:
            raise ProbelabError("config has no 'cocomix' block; this is not a CoCoMix model")
        self.cocomix = CoCoMixConfig.from_dict(dict(block)).validate(config.num_hidden_layers)
        config.cocomix = self.cocomix.to_dict()
        d, cc = config.hidden_size, self.cocomix
        self.model = LlamaModel(config)
        self.predictor = ConceptPredictor(d, cc.n_concepts, cc.ln_eps)
        self.compressor = ConceptCompressor(cc.n_concepts, d, cc.topk)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.concept_scales: dict[int, float] = {}  # steering: {concept id: factor}, see steering.py
        self._recorder = None
        self.post_init()

    @classmethod
    def from_configs(cls, llama: LlamaConfig, cocomix: CoCoMixConfig) -> "CoCoMixForCausalLM":
        llama.cocomix = cocomix.validate(llama.num_hidden_layers).to_dict()
        return cls(llama)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    # -- recordable protocol (probelab.capture) -------------------------------------------------
    @contextlib.contextmanager
    def attach_recorder(self, recorder) -> Iterator[None]:
        """Streams for ``probelab.capture``: ``resid`` (token slots only, so every layer is [B, T, d]),
        ``concept`` (the concept slots' states from the insert layer on) and ``concept_logits`` (z)."""
        self._recorder = recorder
        try:
            yield
        finally:
            self._recorder = None

    def _put(self, stream: str, layer: int, value: torch.Tensor) -> None:
        if self._recorder is not None:
            self._recorder.put(stream, layer, value)

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache=None, use_cache: bool = False,
                labels: torch.LongTensor | None = None, concept_labels: torch.LongTensor | None = None,
                **_ignored) -> CoCoMixOutput:
        """Run the model on ``input_ids [B, T]`` (the new tokens when ``cache`` holds earlier ones).

        ``attention_mask [B, past + T]`` marks real tokens (1) and padding (0), cached ones included.
        ``labels [B, T]`` (``-100`` ignored) turns on the NTP loss, ``concept_labels [B, T, K_attr]``
        (negative ids ignored) the concept loss.
        """
        if input_ids.dim() != 2:
            raise ProbelabError(f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        past = cache.get_seq_length(0) if cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(B, past + T, dtype=torch.long, device=input_ids.device)
        if attention_mask.shape != (B, past + T):
            raise ProbelabError(f"attention_mask must be [batch, past + tokens] = {(B, past + T)}, "
                                f"got {tuple(attention_mask.shape)}")
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)[:, past:]
        self._check_concept_labels(concept_labels, B, T)
        impl = self.config._attn_implementation
        L = self.cocomix.insert_layer
        blocks = self.model.layers

        # 1. lower blocks on the token sequence
        h = self.model.embed_tokens(input_ids)
        self._put("resid", 0, h)
        mask = for_attention(causal_mask(attention_mask, T), impl, h.dtype)
        rope = self.model.rotary_emb(h, position_ids)
        for i in range(L):
            h = blocks[i](h, attention_mask=mask, position_ids=position_ids, use_cache=use_cache,
                          position_embeddings=rope, **{_CACHE_KW: cache})
            self._put("resid", i + 1, h)

        # 2. predict concepts, (optionally steer,) compress the TopK into one vector per token
        z, mu, std = self.predictor(h)
        z = scale_concepts(z, self.concept_scales)
        c, concept_ids = self.compressor(z, mu, std, self.predictor.pre_bias)
        self._put("concept_logits", L, z)
        self._put("concept", L, c)

        # 3. upper blocks on h_1, c_1, h_2, c_2, ... (a concept slot shares its token's position)
        x = interleave(h, c.to(h.dtype))
        pos2 = double(position_ids)
        mask = for_attention(causal_mask(double(attention_mask), 2 * T), impl, x.dtype)
        rope = self.model.rotary_emb(x, pos2)
        for i in range(L, len(blocks)):
            x = blocks[i](x, attention_mask=mask, position_ids=pos2, use_cache=use_cache,
                          position_embeddings=rope, **{_CACHE_KW: cache})
            self._put("resid", i + 1, token_slots(x))
            self._put("concept", i + 1, concept_slots(x))

        # 4. next-token logits from the concept slots
        logits = self.lm_head(self.model.norm(concept_slots(x)))
        out = CoCoMixOutput(logits, z, concept_ids, cache=cache if use_cache else None)
        if labels is not None:
            out.loss, out.ntp_loss, out.concept_loss = cocomix_loss(logits, labels, z, concept_labels,
                                                                    self.cocomix.lam)
        return out

    def _check_concept_labels(self, concept_labels, B: int, T: int) -> None:
        if concept_labels is None:
            return
        if concept_labels.dim() != 3 or concept_labels.shape[:2] != (B, T):
            raise ProbelabError(f"concept_labels must be [batch, tokens, k_attr] with batch, tokens = {(B, T)}, "
                                f"got {tuple(concept_labels.shape)}")
        hi = int(concept_labels.max()) if concept_labels.numel() else -1
        if hi >= self.cocomix.n_concepts:
            raise ProbelabError(f"concept label {hi} is out of range 0..{self.cocomix.n_concepts - 1} "
                                "(does the teacher's SAE match this student's n_concepts?)")

    # -- conveniences -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """Greedy or sampled decoding with a KV cache over the interleaved sequence (see generation.py)."""
        from .generation import generate

        return generate(self, input_ids, attention_mask, **kwargs)

    def steer(self, concepts: dict[int, float]):
        """Context manager: scale these concepts' predicted logits before TopK (see steering.py)."""
        from .steering import steer_cocomix

        return steer_cocomix(self, concepts)
