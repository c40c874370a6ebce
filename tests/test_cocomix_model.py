"""CoCoMix student: interleaving, causal mask over the doubled sequence, loss decomposition, padding."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from probelab.errors import ProbelabError
from probelab.models.cocomix import CoCoMixConfig, tiny_cocomix
from probelab.models.cocomix.compress import topk_sparse
from probelab.models.cocomix.interleave import causal_mask, concept_slots, interleave, token_slots
from probelab.models.cocomix.predictor import normalize


@pytest.fixture(scope="module")
def model():
    return tiny_cocomix()


def ids(B=2, T=9, seed=0):
    return torch.randint(0, 256, (B, T), generator=torch.Generator().manual_seed(seed))


def test_interleave_layout_and_inverse():
    h, c = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    x = interleave(h, c)
    assert x.shape == (2, 10, 3)
    assert torch.equal(x[:, 0::2], h) and torch.equal(x[:, 1::2], c)
    assert torch.equal(token_slots(x), h) and torch.equal(concept_slots(x), c)


def test_causal_mask_with_cache_and_padding():
    valid = torch.tensor([[0, 1, 1, 1]])
    m = causal_mask(valid, q_len=2)[0, 0]  # queries are slots 2 and 3
    assert m.tolist() == [[False, True, True, False], [False, True, True, True]]
    # a padding query still sees itself (no all-masked row -> no NaN in SDPA)
    assert causal_mask(torch.tensor([[0, 1]]), 2)[0, 0, 0].tolist() == [True, False]


def test_output_shapes(model):
    out = model(ids())
    assert out.logits.shape == (2, 9, 259)
    assert out.concept_logits.shape == (2, 9, model.cocomix.n_concepts)
    assert out.concept_ids.shape == (2, 9, model.cocomix.topk)
    # the chosen ids are the TopK of the returned concept logits
    assert torch.equal(out.concept_ids.sort(-1).values, out.concept_logits.topk(4, -1).indices.sort(-1).values)


def test_no_position_sees_a_later_token_gradient(model):
    """d logits[t] / d embedding[s] is exactly zero for s > t, and non-zero for s = t (c_t sees h_t)."""
    x = ids(B=1, T=8)
    emb = {}

    def keep(_m, _a, out):
        out.retain_grad()
        emb["e"] = out

    handle = model.model.embed_tokens.register_forward_hook(keep)
    try:
        for t in (0, 3, 6):
            out = model(x)
            (out.logits[0, t].sum() + out.concept_logits[0, t].sum()).backward()
            g = emb["e"].grad[0].abs().sum(-1)
            assert torch.all(g[t + 1:] == 0), f"position {t} received gradient from a later token"
            assert g[t] > 0
            model.zero_grad(set_to_none=True)
    finally:
        handle.remove()


def test_perturbing_later_tokens_changes_nothing_earlier(model):
    a = ids(B=1, T=10, seed=1)
    b = a.clone()
    b[0, 6:] = (b[0, 6:] + 7) % 256
    oa, ob = model(a), model(b)
    assert torch.allclose(oa.logits[:, :6], ob.logits[:, :6], atol=1e-5)
    assert torch.allclose(oa.concept_logits[:, :6], ob.concept_logits[:, :6], atol=1e-5)
    assert not torch.allclose(oa.logits[:, 6:], ob.logits[:, 6:], atol=1e-3)


def test_concept_changes_the_token_prediction(model):
    """Logits are read from the concept slots: changing the compressor changes them."""
    x = ids()
    base = model(x).logits
    with torch.no_grad():
        w = model.compressor.proj.weight
        saved = w.clone()
        w.mul_(3.0)
    try:
        assert not torch.allclose(model(x).logits, base, atol=1e-4)
    finally:
        with torch.no_grad():
            w.copy_(saved)


def test_lambda_zero_is_plain_ntp_on_concept_slot_logits():
    m = tiny_cocomix(lam=0.0)
    x = ids()
    labels = torch.randint(0, m.cocomix.n_concepts, (2, 9, 4))
    out = m(x, labels=x, concept_labels=labels)
    manual = F.cross_entropy(out.logits[:, :-1].reshape(-1, 259), x[:, 1:].reshape(-1))
    assert torch.allclose(out.loss, manual, atol=1e-6)
    assert out.concept_loss > 0  # computed and reported, but weighted by 0


def test_loss_decomposition_brute_force(model):
    x = ids()
    labels = torch.randint(0, model.cocomix.n_concepts, (2, 9, 4))
    labels[0, -1] = -100  # ignored (no next token)
    out = model(x, labels=x, concept_labels=labels)
    terms = [F.cross_entropy(out.concept_logits[b, t][None], labels[b, t, k][None])
             for b in range(2) for t in range(9) for k in range(4) if labels[b, t, k] >= 0]
    concept = torch.stack(terms).mean()
    assert torch.allclose(out.concept_loss, concept, atol=1e-5)
    assert torch.allclose(out.loss, out.ntp_loss + 0.1 * concept, atol=1e-5)


def test_left_padding_matches_unpadded(model):
    short = ids(B=1, T=5, seed=2)
    padded = torch.cat([torch.full((1, 3), 258), short], dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    a, b = model(short), model(padded, attention_mask=mask)
    assert torch.allclose(a.logits, b.logits[:, 3:], atol=1e-5)
    assert torch.isfinite(b.logits).all()


def test_eager_and_sdpa_agree():
    x = ids()
    a = tiny_cocomix(attn_implementation="sdpa")(x).logits
    b = tiny_cocomix(attn_implementation="eager")(x).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_predictor_compressor_math(model):
    h = torch.randn(2, 3, 64) * 4 + 1
    x, mu, std = normalize(h)
    assert torch.allclose(x * std + mu, h, atol=1e-5)
    z, mu, std = model.predictor(h)
    sparse, chosen = topk_sparse(z, 4)
    assert int((sparse != 0).sum(-1).max()) == 4
    c, ids_ = model.compressor(z, mu, std, model.predictor.pre_bias)
    expected = (sparse @ model.compressor.proj.weight.T + model.predictor.pre_bias) * std + mu
    assert torch.allclose(c, expected, atol=1e-5)


def test_bad_input_errors(model):
    with pytest.raises(ProbelabError, match="out of range"):
        model(ids(), labels=ids(), concept_labels=torch.full((2, 9, 4), model.cocomix.n_concepts))
    with pytest.raises(ProbelabError, match="concept_labels must be"):
        model(ids(), labels=ids(), concept_labels=torch.zeros(2, 8, 4, dtype=torch.long))
    with pytest.raises(ProbelabError, match="attention_mask"):
        model(ids(), attention_mask=torch.ones(2, 3))
    with pytest.raises(ProbelabError, match=r"\[batch, tokens\]"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ProbelabError, match="insert_layer"):
        tiny_cocomix(insert_layer=4)
    with pytest.raises(ProbelabError, match="topk"):
        CoCoMixConfig(n_concepts=8, topk=9).validate()
    with pytest.raises(ProbelabError, match="unknown config key"):
        CoCoMixConfig.from_dict({"insert_layer": 2, "bogus": 1})
