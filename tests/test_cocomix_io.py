"""CoCoMix save/load as an HF folder, capture streams, parameter matching of the NTP baseline, label cache."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from probelab.errors import ProbelabError
from probelab.models import load_model
from probelab.models.cocomix import (CoCoMixConfig, CoCoMixForCausalLM, cocomix_active_parameters,
                                     llama_parameters, matched_ntp_config, save_cocomix, tiny_cocomix)
from probelab.models.cocomix.labels import label_blocks
from probelab.models.cocomix.sizing import _with_width
from probelab.models.cocomix.tiny import tiny_llama_config
from probelab.models.tiny import tiny_tokenizer


def test_save_load_round_trip(tmp_path):
    m = tiny_cocomix(seed=1)
    with torch.no_grad():
        m.predictor.pre_bias.normal_()  # make sure non-default values survive
    folder = save_cocomix(m, tmp_path / "cc", tiny_tokenizer())
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["cocomix"]["insert_layer"] == 2 and cfg["cocomix"]["n_concepts"] == 96
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    m2, tok = load_model(folder)
    assert isinstance(m2, CoCoMixForCausalLM) and not m2.training
    a, b = m.state_dict(), m2.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert m2.lm_head.weight.data_ptr() == m2.model.embed_tokens.weight.data_ptr()  # still tied
    x = tok(["hello"], return_tensors="pt")["input_ids"]
    assert torch.equal(m.generate(x, max_new_tokens=5), m2.generate(x, max_new_tokens=5))


def test_load_rejects_a_bad_cocomix_block(tmp_path):
    folder = save_cocomix(tiny_cocomix(), tmp_path / "cc", tiny_tokenizer())
    cfg = json.loads((folder / "config.json").read_text())
    cfg["cocomix"]["insert_layer"] = 9
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ProbelabError, match="insert_layer"):
        load_model(folder)


def test_capture_streams_have_token_length():
    from probelab.capture import capture

    m, tok = tiny_cocomix(), tiny_tokenizer()
    caps = capture(m, tok, ["a cat", "the dog sat"], select="all")
    L = m.cocomix.insert_layer
    assert caps.layers["resid"] == list(range(5))
    assert caps.layers["concept_logits"] == [L]
    for text_states, toks in zip(caps.states["resid"], caps.tokens):
        assert text_states.shape == (5, len(toks), 64)  # upper layers: token slots only
    assert caps.states["concept_logits"][0].shape[-1] == m.cocomix.n_concepts


def test_parameter_formula_matches_real_models():
    cfg = tiny_llama_config(num_layers=3, hidden=48)
    assert llama_parameters(cfg) == sum(p.numel() for p in LlamaForCausalLM(cfg).parameters())
    cc = CoCoMixConfig(insert_layer=1, n_concepts=80, topk=4)
    m = CoCoMixForCausalLM.from_configs(tiny_llama_config(num_layers=3, hidden=48), cc)
    total = sum(p.numel() for p in m.parameters())
    # active = total minus the compressor columns TopK leaves idle
    assert cocomix_active_parameters(cfg, cc) == total - (80 - 4) * 48


def test_matched_ntp_is_the_closest_width():
    # the paper's 69M setting: d512, 8 layers, GPT-2 vocab, 32k concepts, k=32 (official NTP: d624)
    cfg = LlamaConfig(vocab_size=50257, hidden_size=512, intermediate_size=1365, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=True)
    cc = CoCoMixConfig(insert_layer=4, n_concepts=32768, topk=32)
    target = cocomix_active_parameters(cfg, cc)
    ntp = matched_ntp_config(cfg, cc)
    assert 600 <= ntp.hidden_size <= 650  # same ballpark as the official d624 (Llama blocks differ from GPT-2's)
    gap = abs(llama_parameters(ntp) - target)
    for d in (ntp.hidden_size - 16, ntp.hidden_size + 16):  # the neighbouring widths are worse
        assert abs(llama_parameters(_with_width(cfg, d, 1365 / 512)) - target) >= gap
    assert not hasattr(ntp, "cocomix")


def test_label_cache_reuses_and_refuses(tmp_path):
    calls = []

    def labeler(ids, mask):
        calls.append(ids.shape[0])
        return (ids[..., None] * 3 + torch.arange(2)) % 50

    blocks = torch.randint(0, 100, (10, 6), generator=torch.Generator().manual_seed(0))
    a = label_blocks(labeler, blocks, tmp_path, {"teacher": "t"}, shard_size=4, batch_size=2, progress=False)
    assert a.shape == (10, 6, 2) and sum(calls) == 10
    assert torch.equal(a, labeler(blocks, None).int())
    (tmp_path / "shard-00001.safetensors").unlink()  # an interrupted run resumes at the missing shard
    calls.clear()
    b = label_blocks(labeler, blocks, tmp_path, {"teacher": "t"}, shard_size=4, batch_size=2, progress=False)
    assert torch.equal(a, b) and sum(calls) == 4
    with pytest.raises(ProbelabError, match="other tokens or another teacher"):
        label_blocks(labeler, blocks, tmp_path, {"teacher": "other"}, progress=False)
    with pytest.raises(ProbelabError, match="other tokens or another teacher"):
        label_blocks(labeler, blocks + 1, tmp_path, {"teacher": "t"}, progress=False)


def test_label_cache_refuses_a_missing_selection_before_any_work(tmp_path):
    calls = []

    def labeler(ids, mask):  # attribution only: no label_sets
        calls.append(ids.shape[0])
        return ids[..., None] % 7

    blocks = torch.randint(0, 100, (8, 5), generator=torch.Generator().manual_seed(1))
    with pytest.raises(ProbelabError, match="gives no activation labels"):
        label_blocks(labeler, blocks, tmp_path / "a", {"teacher": "t"}, shard_size=4, progress=False, select="activation")
    assert calls == []  # refused up front, not after labelling a shard
    label_blocks(labeler, blocks, tmp_path / "b", {"teacher": "t"}, shard_size=4, progress=False)
    with pytest.raises(ProbelabError, match="holds no activation labels"):  # a complete cache without that set
        label_blocks(labeler, blocks, tmp_path / "b", {"teacher": "t"}, shard_size=4, progress=False, select="activation")
