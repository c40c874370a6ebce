"""probelab.sae.token_ce: the chunked per-token cross-entropy equals F.cross_entropy (values, gradients)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from probelab.sae import token_ce
from probelab.sae.token_ce import token_cross_entropy


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_cross_entropy_with_ignored_rows(dtype, monkeypatch):
    monkeypatch.setattr(token_ce, "CHUNK_ELEMENTS", 3 * 97)  # 3 rows a chunk: the last chunk is partial
    gen = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(11, 97, generator=gen)).to(dtype)
    targets = torch.randint(0, 97, (11,), generator=gen)
    targets[[2, 7]] = -100
    weights = torch.rand(11, generator=gen)  # a non-uniform upstream gradient
    ref_in = logits.clone().requires_grad_(True)
    ref = F.cross_entropy(ref_in.float(), targets, reduction="none", ignore_index=-100)
    (ref * weights).sum().backward()
    got_in = logits.clone().requires_grad_(True)
    got = token_cross_entropy(got_in, targets)
    (got * weights).sum().backward()
    assert got.dtype == torch.float32 and got_in.grad.dtype == dtype
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert got[2] == 0 and got[7] == 0 and not got_in.grad[[2, 7]].any()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(got_in.grad.float(), ref_in.grad.float(), **tol)


def test_refuses_wrong_shapes():
    with pytest.raises(ValueError, match=r"logits \[N, V\] and targets \[N\]"):
        token_cross_entropy(torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long))
