"""Concept attribution scores (CoCoMix, arXiv 2502.08524, Eq. 1) and the top-K_attr concept labels.

The score of SAE latent i at token t is *activation x gradient*: how much the loss would change,
to first order, if the latent's contribution to the residual stream were scaled. Three choices
pick a variant (:class:`AttributionSpec`):

- ``activation``: ``"pre"`` (encoder pre-activation, the paper: inactive concepts can be chosen)
  or ``"post"`` (TopK output, the official code: only the k active latents get a non-zero score);
- ``loss``: ``"next_token"`` (the paper: -log p(x_{t+1} | x_<=t) only, so position t's score sees
  only its own prediction) or ``"sequence"`` (the official code: the mean next-token loss of the
  whole text, so position t also gets credit for later predictions);
- ``sign``: ``"signed"`` (both paper and code take the top-k of the signed score) or ``"absolute"``.

Named variants: ``official`` = (post, sequence, signed), the default because it produced the
paper's numbers; ``paper`` = (pre, next_token, signed).

The gradient wrt a latent is the residual gradient pulled back through the SAE decoder
(:func:`probelab.sae.encode.latent_grad`). For the next-token loss, every position's own gradient
comes out of one backward pass through :mod:`probelab.sae.diagonal`; the sequence loss needs no
trick. The teacher's parameters never receive gradients.

>>> from probelab.models.tiny import tiny_llama
>>> from probelab.sae.tiny import tiny_sae
>>> labeler = ConceptLabeler(tiny_llama(), tiny_sae(), k_attr=4)
>>> ids = torch.tensor([[256, 72, 105, 33, 10]])
>>> labeler(ids, torch.ones_like(ids)).shape
torch.Size([1, 5, 4])
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, replace

import torch

from ..capture import position_ids_from_mask
from ..errors import ProbelabError
from ..models.attention import attention_implementation, choose_attention
from ..models.devices import input_device
from .diagonal import diagonal_gradients
from .encode import encode_parts, latent_grad
from .load import check_sae_fits
from .teacher import residual_leaf
from .token_ce import token_cross_entropy

IGNORE_LABEL = -100  # label of positions with no next token (padding, the last real token)
CAST_WEIGHTS_ONCE = True  # under autocast, matmul weights are cast once per model and kept (see _autocast_weights)
_CAST_MODULES = ("Linear", "Conv1D")  # modules whose weight autocast casts on every call (matmul / addmm)
_CAST_CACHE: dict[int, tuple] = {}  # id(weight) -> ((version, data_ptr, dtype), copy); dropped with the weight
ACTIVATIONS = ("post", "pre")
LOSSES = ("sequence", "next_token")
SIGNS = ("signed", "absolute")
SELECTIONS = ("attribution", "activation")  # what ranks the latents that become labels


@dataclass(frozen=True)
class AttributionSpec:
    activation: str = "post"
    loss: str = "sequence"
    sign: str = "signed"

    def __post_init__(self) -> None:
        for name, value, allowed in (("activation", self.activation, ACTIVATIONS), ("loss", self.loss, LOSSES),
                                     ("sign", self.sign, SIGNS)):
            if value not in allowed:
                raise ProbelabError(f"unknown attribution {name} {value!r}; choose one of {', '.join(allowed)}")


VARIANTS: dict[str, AttributionSpec] = {
    "official": AttributionSpec("post", "sequence", "signed"),
    "paper": AttributionSpec("pre", "next_token", "signed"),
}


def resolve_spec(variant: str | AttributionSpec = "official", **overrides) -> AttributionSpec:
    """A named variant (``official``/``paper``) with optional per-field overrides (``None`` = keep)."""
    if isinstance(variant, AttributionSpec):
        spec = variant
    elif variant in VARIANTS:
        spec = VARIANTS[variant]
    else:
        raise ProbelabError(f"unknown attribution variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return replace(spec, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class Attribution:
    """Everything one attribution pass produces for a batch (all ``[B, T, ...]``)."""

    scores: torch.Tensor      # [B, T, d_sae] attribution score
    post: torch.Tensor        # [B, T, d_sae] SAE activations (what decode consumes)
    pre: torch.Tensor         # [B, T, d_sae] pre-activations
    residual: torch.Tensor    # [B, T, d_in] teacher residual at the SAE site
    valid: torch.Tensor       # [B, T] bool: position has a next-token target
    token_loss: torch.Tensor  # [B, T] next-token loss (0 where not valid)

    def top(self, k: int, by: str = "attribution") -> tuple[torch.Tensor, torch.Tensor]:
        """``(values, indices)`` of the top-k latents per token by ``attribution`` or ``activation``."""
        source = {"attribution": self.scores, "activation": self.post}.get(by)
        if source is None:
            raise ProbelabError(f"unknown ranking {by!r}; choose attribution or activation")
        return torch.topk(source, k, dim=-1)


def next_token_losses(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor):
    """Per-position loss ``-log p(x_{t+1} | x_<=t)`` ``[B, T]`` and the positions that have a target."""
    mask = mask.bool()
    valid = torch.zeros_like(mask)
    valid[:, :-1] = mask[:, :-1] & mask[:, 1:]
    # targets aligned with the logits (the next id, -100 where there is none): the CE reads the logits
    # in place, with no shifted [tokens, vocab] copy in the forward and no scatter of it in the backward,
    # and in row chunks (probelab.sae.token_ce), with no full-size fp32 temporaries
    targets = torch.full_like(input_ids, IGNORE_LABEL)
    targets[:, :-1] = input_ids[:, 1:]
    targets = targets.masked_fill(~valid, IGNORE_LABEL)
    losses = token_cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                 ignore_index=IGNORE_LABEL).view(mask.shape)
    return losses, valid


def objective(losses: torch.Tensor, valid: torch.Tensor, loss: str) -> torch.Tensor:
    """The scalar whose residual gradient gives the scores (texts never mix: each text's own sum)."""
    if loss == "next_token":
        return losses.sum()  # with diagonal attention, position t's gradient is dL_t/dh_t
    per_text = valid.sum(-1).clamp(min=1)
    return (losses.sum(-1) / per_text).sum()  # each text's mean next-token loss, as the official code


def _cast_copy(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight.to(dtype)``, made once and reused until the weight changes (in place or moved)."""
    key = (weight._version, weight.data_ptr(), dtype)
    hit = _CAST_CACHE.get(id(weight))
    if hit is None or hit[0] != key:
        if hit is None:
            weakref.finalize(weight, _CAST_CACHE.pop, id(weight), None)
        hit = (key, weight.detach().to(dtype))
        _CAST_CACHE[id(weight)] = hit
    return hit[1]


@contextlib.contextmanager
def _autocast_weights(model, dtype: torch.dtype | None):
    """Swap every matmul weight of ``model`` for its ``dtype`` copy while autocast runs the teacher.

    Autocast casts a weight to the compute dtype on every call and keeps the cast only for weights
    that require grad; the teacher is frozen, so each forward re-cast every weight (the whole model,
    fp32 -> bf16). The copies here are exactly what autocast computes (the same ``.to(dtype)``), so the
    results are bitwise the same; they are made once per model and kept while its weights live
    (half the fp32 model's size for bf16). A tied unembedding gets its own copy; the embedding
    lookup keeps the fp32 table as before.
    """
    if dtype is None or not CAST_WEIGHTS_ONCE:
        yield
        return
    swapped = []
    try:
        for module in model.modules():
            w = module._parameters.get("weight") if type(module).__name__ in _CAST_MODULES else None
            if w is None or not w.is_floating_point() or w.dtype == dtype:
                continue
            module._parameters["weight"] = _cast_copy(w, dtype)
            swapped.append((module, w))
        yield
    finally:
        for module, w in swapped:
            module._parameters["weight"] = w


def attribute(model, sae, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              spec: AttributionSpec | str = "official", site: int | None = None,
              autocast: torch.dtype | None = None, attention: str | None = "auto") -> Attribution:
    """Attribution scores of every SAE latent at every token of a batch (one forward + one backward).

    ``autocast=torch.bfloat16`` runs the teacher's forward and backward under autocast (faster on
    CPUs with bf16 matmuls; scores then match fp32 to ~1e-2 relative, labels up to near-ties).
    ``attention`` is the teacher's attention implementation for the sequence loss: ``"auto"``
    (default) uses eager attention on CPU under bf16 autocast while its ``[batch, heads, T, T]``
    softmaxes stay small (:func:`probelab.models.attention.auto_attention`; a small gain over SDPA at
    128 tokens, 5-14% in most runs of bench/attribution.py) and the model's own attention otherwise
    (fp32, long texts, GPUs with fused kernels); a name forces that implementation; ``None`` keeps
    the model's own. The next-token loss always uses the diagonal-gradient attention.
    """
    spec = resolve_spec(spec)
    site = check_sae_fits(sae, model) if site is None else site
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    device = input_device(model)  # the embedding's device (the first shard of a device_map model)
    ids, mask = input_ids.to(device), attention_mask.to(device)
    if spec.loss == "next_token":
        attn = diagonal_gradients(model)
    else:
        # eager takes its softmax in fp32: a float64 teacher keeps its own attention (exact, and no
        # fp64 mask minimum turning into -inf in fp32)
        dtype = next(model.parameters()).dtype
        attention = choose_attention(attention, model, device, ids.shape[0], ids.shape[1], autocast or dtype)
        exact = dtype == torch.float64
        attn = contextlib.nullcontext() if exact or not attention else attention_implementation(model, attention, optional=True)
    amp = torch.autocast(device.type, dtype=autocast, enabled=autocast is not None)
    with residual_leaf(model, site) as leaf, attn, torch.enable_grad(), amp, _autocast_weights(model, autocast):
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False)
        losses, valid = next_token_losses(out.logits, ids, mask)
        total = objective(losses, valid, spec.loss)
        (grad_h,) = torch.autograd.grad(total, leaf.h)
    sae_device = next(sae.parameters()).device  # the site's block may sit on another shard
    h = leaf.h.detach().to(sae_device)
    grad_h = grad_h.to(sae_device, h.dtype)
    valid, losses = valid.to(sae_device), losses.to(sae_device)
    mask = mask.to(sae_device)
    with torch.no_grad():
        pre, post = encode_parts(sae, h)
    z = post if spec.activation == "post" else pre
    scores = z.detach() * latent_grad(sae, z, grad_h)
    if spec.sign == "absolute":
        scores = scores.abs()
    real = mask.bool().unsqueeze(-1)
    scores = scores.masked_fill(~real, 0.0)
    return Attribution(scores.detach(), post.detach(), pre.detach(), h, valid, losses.detach())


class ConceptLabeler:
    """CoCoMix concept labels: the top ``k_attr`` latents by attribution score at every token.

    ``labeler(input_ids, attention_mask)`` → ``LongTensor[B, T, k_attr]``; positions with no
    next token (padding and each text's last real token) get :data:`IGNORE_LABEL` (-100, the
    cross-entropy ignore index). ``labeler.scores(...)`` → ``FloatTensor[B, T, d_sae]``.
    The batch is processed in chunks of ``batch_size`` texts; the teacher stays frozen.
    ``autocast=torch.bfloat16`` trades exactness for speed; ``attention`` picks the teacher's
    attention for the sequence loss (see :func:`attribute`).
    """

    def __init__(self, model, sae, k_attr: int = 4, variant: str | AttributionSpec = "official", *,
                 activation: str | None = None, loss: str | None = None, sign: str | None = None,
                 batch_size: int = 8, autocast: torch.dtype | None = None, attention: str | None = "auto"):
        if k_attr < 1 or k_attr > int(sae.cfg.d_sae):
            raise ProbelabError(f"k_attr must be between 1 and the SAE width {sae.cfg.d_sae}, got {k_attr}")
        self.model, self.sae = model, sae
        self.site = check_sae_fits(sae, model)
        self.spec = resolve_spec(variant, activation=activation, loss=loss, sign=sign)
        self.k_attr, self.batch_size, self.autocast, self.attention = k_attr, batch_size, autocast, attention
        self.max_length = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        self.sae.to(input_device(model))

    @property
    def num_concepts(self) -> int:
        return int(self.sae.cfg.d_sae)

    def _check(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ProbelabError(f"input_ids must be [batch, tokens] with at least one token, got {tuple(input_ids.shape)}")
        if self.max_length and input_ids.shape[1] > self.max_length:
            raise ProbelabError(f"{input_ids.shape[1]} tokens exceed the teacher's context of {self.max_length}")
        if attention_mask is None:
            return torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ProbelabError("attention_mask must have the shape of input_ids")
        return attention_mask

    def attribution(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Attribution:
        """The full :class:`Attribution` (scores, activations, residual, ...) for a batch."""
        mask = self._check(input_ids, attention_mask)
        parts = [attribute(self.model, self.sae, input_ids[i:i + self.batch_size], mask[i:i + self.batch_size],
                           self.spec, self.site, self.autocast, self.attention) for i in range(0, input_ids.shape[0], self.batch_size)]
        if len(parts) == 1:
            return parts[0]
        return Attribution(*(torch.cat([getattr(p, f) for p in parts]) for f in
                             ("scores", "post", "pre", "residual", "valid", "token_loss")))

    def scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attribution scores ``FloatTensor[B, T, d_sae]`` (0 at padding)."""
        return self.attribution(input_ids, attention_mask).scores

    def labels_from(self, att: Attribution, select: str = "attribution") -> torch.Tensor:
        """Top ``k_attr`` latents per token by attribution score (the paper), or by SAE activation
        (``select="activation"``, the paper's Fig. 6a ablation); :data:`IGNORE_LABEL` where no next token."""
        if select not in SELECTIONS:
            raise ProbelabError(f"unknown label selection {select!r}; choose one of {', '.join(SELECTIONS)}")
        labels = torch.topk(att.scores if select == "attribution" else att.post, self.k_attr, dim=-1).indices
        return labels.masked_fill(~att.valid.unsqueeze(-1), IGNORE_LABEL)

    def label_sets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Both label selections from one teacher pass: ``{"attribution": ..., "activation": ...}``."""
        att = self.attribution(input_ids, attention_mask)
        return {select: self.labels_from(att, select) for select in SELECTIONS}

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.labels_from(self.attribution(input_ids, attention_mask))
