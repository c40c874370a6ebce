"""The two SAE activations attribution can use, and the gradient of the reconstruction.

For every sae-lens architecture ``encode(x) = act_fn(pre)``; probelab calls ``pre`` the
*pre-activation* (the exact input of the activation function, so a TopK SAE trained with
``rescale_acts_by_decoder_norm`` gives the rescaled value) and ``post`` the *post-activation*
(what ``decode`` consumes). ``decode`` is affine in its input, so the gradient of any loss with
respect to a latent is the residual gradient pulled back through ``decode``:
``dL/dz = J_decode^T dL/dh`` (for a plain SAE, ``W_dec @ dL/dh``).
"""
from __future__ import annotations

import torch


def encode_parts(sae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pre, post)`` activations of ``x [..., d_in]``: ``post = act_fn(pre)``, both ``[..., d_sae]``."""
    captured: dict[str, torch.Tensor] = {}
    act = getattr(sae, "activation_fn", None)
    if isinstance(act, torch.nn.Module):
        handle = act.register_forward_pre_hook(lambda _m, args: captured.__setitem__("pre", args[0]))
        try:
            post = sae.encode(x)
        finally:
            handle.remove()
        return captured["pre"], post
    # architectures whose activation is a plain function: the encoder hook point holds the pre-activation
    post, cache = sae.run_with_cache(x, names_filter=["hook_sae_acts_pre", "hook_sae_acts_post"])
    return cache["hook_sae_acts_pre"], cache["hook_sae_acts_post"]


def latent_grad(sae, z: torch.Tensor, grad_h: torch.Tensor) -> torch.Tensor:
    """``J_decode(z)^T grad_h``: the gradient wrt latents when the residual is replaced by ``decode(z)``."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        recon = sae.decode(z)
        (g,) = torch.autograd.grad(recon, z, grad_outputs=grad_h.to(recon.dtype))
    return g
