"""Control LLM on the embedded SmolLM2-135M (30 layers): identity at init, cached generation, capture."""
from __future__ import annotations

import copy

import pytest
import torch

import probelab
from probelab.models.control import expand_model

TEXTS = ["Question: What is 347 + 589?\nAnswer:", "Paris is the capital of"]


@pytest.fixture(scope="module")
def lerp6(smollm2):
    model, tok = smollm2
    return expand_model(copy.deepcopy(model), num_expanded=6, interpolation="lerp", divergence="mse").eval()


@pytest.mark.parametrize("strategy, interp", [("concat", "lerp"), ("hybrid", "dlerp")])
def test_smollm2_expanded_equals_base_at_init(smollm2, lerp6, strategy, interp):
    base, tok = smollm2
    model = lerp6 if strategy == "concat" else \
        expand_model(copy.deepcopy(base), strategy=strategy, interpolation=interp, num_expanded=6).eval()
    assert model.expansion.layers == [4, 9, 14, 19, 24, 29]
    tok.padding_side = "right"
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        want = base(**enc).logits
        out = model(**enc, labels=enc["input_ids"])
    assert (out.logits - want).abs().max().item() < 1e-5
    assert out.divergence_loss.item() == 0.0


def test_smollm2_capture_streams_and_cached_generation(smollm2, lerp6):
    _, tok = smollm2
    caps = probelab.capture(lerp6, tok, TEXTS, select="last")
    assert caps.layers["merged"] == lerp6.merged_layers == [5, 10, 15, 20, 25, 30]
    for layer in lerp6.merged_layers:
        assert torch.equal(caps.layer(layer, "pretrained"), caps.layer(layer, "expanded"))
        assert torch.allclose(caps.layer(layer, "merged"), caps.layer(layer, "resid"))
    model = copy.deepcopy(lerp6)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    enc = tok(TEXTS[1:], return_tensors="pt")
    kw = dict(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    cached, plain = model.generate(**kw, use_cache=True), model.generate(**kw, use_cache=False)
    assert torch.equal(cached, plain)
