"""SAE firing density: matches a brute-force count, is cached by content, and is invalidated by new weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from probelab.models.tiny import tiny_llama, tiny_tokenizer
from probelab.sae.density import DENSE_THRESHOLD, latent_density, weights_key
from probelab.sae.evaluate import sink_mask
from probelab.sae.tiny import tiny_sae

TEXTS = ["The cat sat on the mat.", "Paris is the capital of France.", "abc abc abc", "hello world, hello!"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path / "cache"))


def brute_force(model, tok, sae, texts):
    """Per text: HF hidden_states at the SAE's site, sinks dropped, each token encoded alone."""
    counts = np.zeros(int(sae.cfg.d_sae), dtype=np.int64)
    n = 0
    site = 2  # hook model.layers.1 = output of block 1 = hidden_states[2]
    for text in texts:
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            h = model(input_ids=ids, output_hidden_states=True).hidden_states[site][0]
        for t in range(h.shape[0]):
            if not sink_mask(h)[t]:
                continue
            z = sae.encode(h[t:t + 1])[0]
            for i in torch.nonzero(z).flatten().tolist():
                counts[i] += 1
            n += 1
    return counts, n


def test_density_matches_a_brute_force_count():
    model, tok, sae = tiny_llama(), tiny_tokenizer(), tiny_sae(k=8)
    d = latent_density(model, tok, sae, texts=TEXTS, cache=False)
    counts, n = brute_force(model, tok, sae, TEXTS)
    assert d.n_tokens == n == sum(len(tok(t)["input_ids"]) - 1 for t in TEXTS)  # only the first token is a sink here
    assert np.array_equal(d.counts, counts)
    assert d.counts.sum() == 8 * n  # TopK: exactly k latents per token
    np.testing.assert_allclose(d.density, counts / n)
    assert np.array_equal(d.dense, counts / n > DENSE_THRESHOLD) and np.array_equal(d.dead, counts == 0)


def test_density_is_cached_and_a_replaced_model_or_sae_recomputes(tmp_path):
    model, tok, sae = tiny_llama(), tiny_tokenizer(), tiny_sae()
    first = latent_density(model, tok, sae, texts=TEXTS)
    files = list((tmp_path / "cache" / "sae_features").glob("density-*.json"))
    assert len(files) == 1
    assert np.array_equal(latent_density(model, tok, sae, texts=TEXTS).counts, first.counts)
    other_model = tiny_llama(seed=1)
    second = latent_density(other_model, tok, sae, texts=TEXTS)
    third = latent_density(model, tok, tiny_sae(seed=3), texts=TEXTS)
    assert len(list((tmp_path / "cache" / "sae_features").glob("density-*.json"))) == 3
    assert not np.array_equal(second.counts, first.counts) and not np.array_equal(third.counts, first.counts)


def test_weights_key_sees_a_perturbation_and_ignores_a_reload():
    a, b = tiny_llama(), tiny_llama()
    assert weights_key(a) == weights_key(b)
    with torch.no_grad():
        b.model.layers[2].mlp.down_proj.weight.add_(1e-3)
    assert weights_key(a) != weights_key(b)
    assert weights_key(tiny_sae()) != weights_key(tiny_sae(seed=1))


def test_density_refuses_an_sae_that_does_not_fit():
    from probelab.errors import ProbelabError

    with pytest.raises(ProbelabError, match="width mismatch"):
        latent_density(tiny_llama(), tiny_tokenizer(), tiny_sae(d_in=32), texts=TEXTS, cache=False)
    with pytest.raises(ProbelabError, match="no texts"):
        latent_density(tiny_llama(), tiny_tokenizer(), tiny_sae(), texts=[], cache=False)
