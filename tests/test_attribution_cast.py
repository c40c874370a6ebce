"""bf16 attribution with matmul weights cast once per model: bitwise what autocast computes per call."""
import pytest
import torch

from probelab.models.tiny import tiny_llama
from probelab.sae import attribution as A
from probelab.sae.tiny import tiny_sae


@pytest.fixture()
def parts():
    model = tiny_llama(num_layers=3, hidden=64, seed=1)
    sae = tiny_sae(d_in=64, d_sae=48, k=6, hook_name="model.layers.1", seed=2)
    ids = torch.randint(3, 250, (3, 17), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    return model, sae, ids, mask


def _run(model, sae, ids, mask, variant, attention, once, monkeypatch):
    monkeypatch.setattr(A, "CAST_WEIGHTS_ONCE", once)
    return A.attribute(model, sae, ids, mask, variant, autocast=torch.bfloat16, attention=attention)


@pytest.mark.parametrize("variant,attention", [("official", "eager"), ("official", None), ("paper", None)])
def test_cast_once_is_bitwise_autocast(parts, monkeypatch, variant, attention):
    model, sae, ids, mask = parts
    ref = _run(model, sae, ids, mask, variant, attention, False, monkeypatch)
    new = _run(model, sae, ids, mask, variant, attention, True, monkeypatch)
    for field in ("scores", "post", "pre", "residual", "token_loss"):
        assert torch.equal(getattr(ref, field), getattr(new, field)), field
    # the model is left as it was: fp32 parameters, the unembedding still tied to the embedding
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_cast_copies_follow_weight_changes(parts, monkeypatch):
    model, sae, ids, mask = parts
    before = _run(model, sae, ids, mask, "official", "eager", True, monkeypatch)
    with torch.no_grad():
        model.model.layers[2].mlp.down_proj.weight.mul_(1.5)  # in place, as an optimiser step
    after = _run(model, sae, ids, mask, "official", "eager", True, monkeypatch)
    ref = _run(model, sae, ids, mask, "official", "eager", False, monkeypatch)
    assert torch.equal(after.scores, ref.scores) and not torch.equal(after.scores, before.scores)


def test_fp32_attribution_casts_nothing(parts, monkeypatch):
    model, sae, ids, mask = parts
    A._CAST_CACHE.clear()
    A.attribute(model, sae, ids, mask, "official")
    assert A._CAST_CACHE == {}
