"""CoCoMix decoding with a KV cache over the interleaved sequence, and steering by concepts."""
from __future__ import annotations

import pytest
import torch

from probelab.errors import ProbelabError
from probelab.models.cocomix import steer_cocomix, steer_residual, tiny_cocomix
from probelab.models.tiny import tiny_llama


@pytest.fixture(scope="module")
def model():
    return tiny_cocomix(seed=3)


def prompt(B=2, T=6, seed=0):
    return torch.randint(0, 256, (B, T), generator=torch.Generator().manual_seed(seed))


def test_cached_and_uncached_generation_agree(model):
    x = prompt()
    a = model.generate(x, max_new_tokens=12, use_cache=True)
    b = model.generate(x, max_new_tokens=12, use_cache=False)
    assert a.shape == (2, 18)
    assert torch.equal(a, b)


def test_cached_step_logits_match_full_forward(model):
    """Feeding tokens one at a time through the cache reproduces the full forward's logits and concepts."""
    from transformers import DynamicCache

    x = prompt(B=1, T=7, seed=4)
    full = model(x)
    cache = DynamicCache(config=model.config)
    out = model(x[:, :3], cache=cache, use_cache=True)
    steps = [out.logits]
    concepts = [out.concept_ids]
    for t in range(3, 7):
        o = model(x[:, t:t + 1], attention_mask=torch.ones(1, t + 1, dtype=torch.long), cache=cache, use_cache=True)
        steps.append(o.logits)
        concepts.append(o.concept_ids)
    assert torch.allclose(torch.cat(steps, 1), full.logits, atol=1e-5)
    assert torch.equal(torch.cat(concepts, 1), full.concept_ids)
    L = model.cocomix.insert_layer
    assert cache.get_seq_length(0) == 7 and cache.get_seq_length(L) == 14  # T below, 2T above


def test_left_padded_batch_generation_matches_single(model):
    a, b = prompt(B=1, T=6, seed=5), prompt(B=1, T=3, seed=6)
    batch = torch.cat([a, torch.cat([torch.full((1, 3), 258), b], 1)])
    mask = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    both = model.generate(batch, mask, max_new_tokens=5)
    assert torch.equal(both[0], model.generate(a, max_new_tokens=5)[0])
    assert torch.equal(both[1, 3:], model.generate(b, max_new_tokens=5)[0])


def test_sampling_is_reproducible_and_cache_consistent(model):
    x = prompt(B=1)
    runs = [model.generate(x, max_new_tokens=8, do_sample=True, top_k=20, use_cache=c,
                           generator=torch.Generator().manual_seed(7)) for c in (True, False)]
    assert torch.equal(runs[0], runs[1])


def test_eos_stops_and_pads(model):
    x = prompt(B=1)
    first = model.generate(x, max_new_tokens=1)[0, -1].item()
    out = model.generate(x, max_new_tokens=5, eos_token_id=first)
    assert out.shape[1] == x.shape[1] + 1 and out[0, -1].item() == first


def test_steering_factor_one_changes_nothing(model):
    x = prompt()
    base = model(x)
    with model.steer({5: 1.0, 17: 1.0}):
        same = model(x)
        gen = model.generate(x, max_new_tokens=6)
    assert torch.equal(same.concept_ids, base.concept_ids)
    assert torch.allclose(same.logits, base.logits)
    assert torch.equal(gen, model.generate(x, max_new_tokens=6))
    assert model.concept_scales == {}


def test_large_factor_changes_the_chosen_concepts(model):
    x = prompt(B=1)
    base = model(x)
    z = base.concept_logits[0]
    # a concept with a positive logit that is not in the TopK anywhere
    chosen = set(base.concept_ids.flatten().tolist())
    cand = [i for i in range(z.shape[1]) if i not in chosen and bool((z[:, i] > 0).all())]
    assert cand, "the tiny model should have such a concept"
    c = cand[0]
    with steer_cocomix(model, {c: 1000.0}):
        out = model(x)
    assert (out.concept_ids == c).any(-1).all()  # now chosen at every token
    assert not torch.allclose(out.logits, base.logits, atol=1e-4)
    # and scaling a chosen concept by a large negative factor removes it
    top = base.concept_ids[0, 0, 0].item()
    with model.steer({top: -1000.0}):
        assert not (model(x).concept_ids[0, 0] == top).any()


def test_steering_errors(model):
    with pytest.raises(ProbelabError, match="out of range"):
        with model.steer({model.cocomix.n_concepts: 2.0}):
            pass
    with pytest.raises(ProbelabError, match="out of range"):
        with model.steer({-1: 2.0}):
            pass
    with pytest.raises(ProbelabError, match="not a CoCoMix model"):
        with steer_cocomix(tiny_llama(), {1: 2.0}):
            pass


def test_teacher_residual_steering_adds_the_decoder_direction():
    from probelab.sae.tiny import tiny_sae

    teacher = tiny_llama()
    sae = tiny_sae(d_in=64, d_sae=128, hook_name="model.layers.1")
    x = prompt(B=1)
    seen = {}
    blocks = teacher.model.layers
    hooks = [blocks[i].register_forward_pre_hook(lambda _m, a, i=i: seen.__setitem__(i, a[0].detach()))
             for i in (1, 2)]
    try:
        base = teacher(x).logits
        before = dict(seen)
        with steer_residual(teacher, sae, {7: 3.0}):
            steered = teacher(x).logits
        after = dict(seen)
        # the input of block 2 (= output of block 1, the SAE site) moved by exactly 3 * W_dec[7]
        assert torch.allclose(after[2] - before[2], (3.0 * sae.W_dec[7].detach()).expand_as(before[2]), atol=1e-5)
        assert torch.allclose(after[1], before[1])  # below the site: untouched
        assert not torch.allclose(steered, base, atol=1e-4)
        assert torch.allclose(teacher(x).logits, base)  # hook removed on exit
        with steer_residual(teacher, sae, {7: 0.0}):
            assert torch.allclose(teacher(x).logits, base)
    finally:
        for h in hooks:
            h.remove()
    with pytest.raises(ProbelabError, match="out of range"):
        with steer_residual(teacher, sae, {128: 1.0}):
            pass
    with pytest.raises(ProbelabError, match="width"):
        with steer_residual(teacher, tiny_sae(d_in=32, hook_name="model.layers.1"), {1: 1.0}):
            pass
