"""A tiny random sae-lens TopK SAE, built in memory (unit tests, quick examples)."""
from __future__ import annotations

import torch


def tiny_sae(d_in: int = 64, d_sae: int = 128, k: int = 8, hook_name: str = "model.layers.1", seed: int = 0,
             dtype: str = "float32"):
    """A sae-lens ``TopKSAE`` with random encoder, decoder and biases (eval mode).

    >>> sae = tiny_sae()
    >>> sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k
    (64, 128, 8)
    """
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    cfg = TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype=dtype, device="cpu",
                        metadata=SAEMetadata(hook_name=hook_name, model_name="tiny"))
    sae = TopKSAE(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec):
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / p.shape[0] ** 0.5)
        sae.b_enc.copy_(0.1 * torch.randn(sae.b_enc.shape, generator=g, dtype=sae.b_enc.dtype))
        sae.b_dec.copy_(0.1 * torch.randn(sae.b_dec.shape, generator=g, dtype=sae.b_dec.dtype))
    return sae.eval()
