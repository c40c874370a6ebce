"""Steering by a concept, two ways that use the same concept id (an SAE latent of the teacher).

1. In a CoCoMix student: multiply the predicted logit of the concept by a factor before TopK
   (paper Sec. 4.4), so it enters (or leaves) the continuous concept mixed into the sequence.
2. In the teacher (or any model with an SAE): add ``scale * W_dec[concept]`` (the SAE decoder
   direction) to the residual stream at the SAE's hook layer, with a forward hook on that block.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch

from ...errors import ProbelabError


def check_concepts(concepts: Mapping[int, float] | None, n_concepts: int) -> dict[int, float]:
    """Validate ``{concept id: factor}``: ids must be in ``0..n_concepts-1``."""
    out = {}
    for cid, factor in (concepts or {}).items():
        if isinstance(cid, bool) or not isinstance(cid, int) or not 0 <= cid < n_concepts:
            raise ProbelabError(f"concept id {cid!r} is out of range 0..{n_concepts - 1}")
        out[int(cid)] = float(factor)
    return out


def scale_concepts(z: torch.Tensor, scales: Mapping[int, float]) -> torch.Tensor:
    """Multiply the logits ``z[..., i]`` by ``scales[i]`` (a copy; ``z`` itself is untouched)."""
    if not scales:
        return z
    idx = torch.tensor(list(scales), device=z.device)
    factor = torch.tensor(list(scales.values()), device=z.device, dtype=z.dtype)
    z = z.clone()
    z[..., idx] = z[..., idx] * factor
    return z


@contextlib.contextmanager
def steer_cocomix(model, concepts: Mapping[int, float]) -> Iterator[None]:
    """While active, the CoCoMix ``model`` scales these concepts' predicted logits before TopK.

    >>> from probelab.models.cocomix import tiny_cocomix
    >>> m = tiny_cocomix()
    >>> with steer_cocomix(m, {3: 5.0}):
    ...     m.concept_scales
    {3: 5.0}
    >>> m.concept_scales
    {}
    """
    if not hasattr(model, "concept_scales"):
        raise ProbelabError(f"{type(model).__name__} is not a CoCoMix model; steer it in the residual stream "
                            "with an SAE instead")
    scales = check_concepts(concepts, model.cocomix.n_concepts)
    old = model.concept_scales
    model.concept_scales = {**old, **scales}
    try:
        yield
    finally:
        model.concept_scales = old


def sae_direction(sae, concept: int) -> torch.Tensor:
    """The decoder direction ``W_dec[concept]`` (``[d_in]``) of an sae-lens SAE."""
    w_dec = sae.W_dec
    if not 0 <= concept < w_dec.shape[0]:
        raise ProbelabError(f"concept id {concept} is out of range 0..{w_dec.shape[0] - 1} for this SAE")
    return w_dec[concept].detach()


@contextlib.contextmanager
def steer_residual(model, sae, concepts: Mapping[int, float]) -> Iterator[None]:
    """While active, ``model``'s residual stream at the SAE site gets ``sum_i scale_i * W_dec[i]`` added.

    ``model`` is any HF decoder (the teacher); ``sae`` an sae-lens SAE trained on its residual stream
    (its hook name says where: ``model.layers.12`` is the output of block 12). Nothing is patched: a
    forward hook is registered on that block and removed on exit. Every position is steered, the
    prompt's and each generated token's (with a KV cache too).
    """
    from ...capture import decoder_layers
    from ...sae.load import check_sae_fits

    index = check_sae_fits(sae, model)  # residual index; one-line error on a width/layer mismatch
    if not concepts:
        raise ProbelabError("no concept to steer")
    delta = torch.zeros(model.config.hidden_size)
    for cid, scale in concepts.items():
        delta = delta + float(scale) * sae_direction(sae, int(cid)).float().cpu()
    layers = decoder_layers(model)

    def shifted(h: torch.Tensor) -> torch.Tensor:
        return h + delta.to(h.dtype).to(h.device)

    if index == 0:  # the embeddings: shift the first block's input
        def pre_hook(_module, args, kwargs):
            if args:
                return (shifted(args[0]), *args[1:]), kwargs
            return args, dict(kwargs, hidden_states=shifted(kwargs["hidden_states"]))

        handle = layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        def post_hook(_module, _args, out):
            if isinstance(out, tuple):
                return (shifted(out[0]), *out[1:])
            return shifted(out)

        handle = layers[index - 1].register_forward_hook(post_hook)
    try:
        yield
    finally:
        handle.remove()
