"""Integration tests on the embedded SmolLM2-135M-Instruct."""
import pytest
import torch

import probelab

pytestmark = pytest.mark.integration


def test_embedded_model_facts(smollm2):
    model, tok = smollm2
    c = model.config
    assert (c.model_type, c.num_hidden_layers, c.hidden_size, c.vocab_size) == ("llama", 30, 576, 49152)
    assert (c.num_attention_heads, c.num_key_value_heads) == (9, 3)


def test_completes_capital_of_france(smollm2):
    model, tok = smollm2
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert "Paris" in tok.decode(out[0, ids.input_ids.shape[1]:])


def test_capture_on_embedded_matches_hf(smollm2):
    model, tok = smollm2
    texts = ["king is to queen", "The capital of France is Paris, a large city."]
    tok.padding_side = "left"
    caps = probelab.capture(model, tok, texts, select="last")
    for i, t in enumerate(texts):
        ids = tok(t, return_tensors="pt").input_ids
        with torch.no_grad():
            hs = model(ids, output_hidden_states=True).hidden_states
        ref = torch.stack(hs)[:-1, 0, -1]
        assert torch.allclose(caps.stream()[:-1, i], ref, atol=1e-4, rtol=1e-5)


def test_loads_from_the_safetensors_cache(smollm2_path):
    model, _ = probelab.load_model("smollm2-135m")
    assert model.config.num_hidden_layers == 30
    assert (smollm2_path / "model.safetensors").is_file()
