"""TransformerLens / SAELens names: Captures under TL hook names, a TL-shaped cache, TL-named SAEs on HF models."""
from __future__ import annotations

import importlib
import json

import pytest
import torch

import probelab
from probelab.errors import CaptureError, ProbelabError
from probelab.sae import check_sae_fits, load_sae
from probelab.sae.inspect import inspect_text
from probelab.sae.site import hf_hook_name, hook_names, resid_index, tl_hook_name
from probelab.sae.tiny import tiny_sae

tl_names = importlib.import_module("probelab.capture.tl_names")
TEXTS = ["king is to queen", "a", "the man is to the woman"]


# ---- the mapping --------------------------------------------------------------------------------
def test_mapping_round_trips():
    n = 6
    for i in range(n + 1):
        post = tl_names.tl_resid_name(i, n_layers=n)
        assert tl_names.resid_index_of(post, n) == i
        pre = tl_names.tl_resid_name(i, prefer="pre", n_layers=n)
        assert tl_names.resid_index_of(pre, n) == i
        assert (pre == post) == (i in (0, n))  # two names between blocks, one at the ends
        assert resid_index(tl_hook_name(i)) == i  # the SAE-side spelling agrees
        if i:
            assert resid_index(hf_hook_name(i)) == i and hook_names(hf_hook_name(i))["tl"] == tl_hook_name(i)
    names = tl_names.tl_names_for(n)
    assert len(names) == 2 * n and sorted(set(names.values())) == list(range(n + 1))
    assert all(tl_names.resid_index_of(k, n) == v for k, v in names.items())


@pytest.mark.parametrize("name, message", [("blocks.3.hook_resid_mid", "not a TransformerLens residual-stream hook"),
                                           ("model.layers.2", "not a TransformerLens"),
                                           ("blocks.9.hook_resid_post", "has only 4 blocks")])
def test_bad_names_are_one_line_errors(name, message):
    with pytest.raises(CaptureError, match=message):
        tl_names.resid_index_of(name, 4)


# ---- against TransformerBridge.run_with_cache ---------------------------------------------------
@pytest.fixture(scope="module")
def bridge_and_caps():
    from probelab.capture.tl import boot_bridge
    from probelab.models.tiny import tiny_llama, tiny_tokenizer

    torch.manual_seed(0)
    model, tok = tiny_llama(), tiny_tokenizer()
    bridge = boot_bridge(model, tok, device="cpu", dtype=torch.float32)
    caps = {s: probelab.capture(model, tok, TEXTS, select=s) for s in ("all", "last")}
    return model, tok, bridge, caps


def test_tl_names_and_values_equal_run_with_cache(bridge_and_caps):
    model, tok, bridge, caps = bridge_and_caps
    n = model.config.num_hidden_layers
    for i, text in enumerate(TEXTS):
        ids = tok(text, return_tensors="pt")["input_ids"]
        _, cache = bridge.run_with_cache(ids, names_filter=lambda name: "hook_resid_" in name)
        tl_resid = {k for k in cache.keys() if k.endswith(("hook_resid_pre", "hook_resid_post"))}
        ours = caps["all"].to_tl_cache(text=i)
        assert set(ours) == tl_resid == set(tl_names.tl_names_for(n))  # the same names as TL's cache
        for name in tl_resid:
            assert ours[name].shape == cache[name].shape  # [batch 1, pos, d_model]
            assert torch.allclose(ours[name], cache[name].float(), atol=1e-4), name
            assert torch.allclose(caps["all"].tl(name)[i], cache[name][0].float(), atol=1e-4)
        last = caps["last"].to_tl_cache()
        for name in tl_resid:
            assert last[name].shape == (len(TEXTS), model.config.hidden_size)
            assert torch.allclose(last[name][i], cache[name][0, -1].float(), atol=1e-4)


def test_tl_cache_errors_and_export(bridge_and_caps, tmp_path):
    from safetensors.torch import load_file

    model, tok, _, caps = bridge_and_caps
    with pytest.raises(CaptureError, match="different numbers of tokens"):
        caps["all"].to_tl_cache()
    with pytest.raises(CaptureError, match="text must be an index 0..2"):
        caps["all"].to_tl_cache(text=3)
    with pytest.raises(CaptureError, match="no stream 'expanded'"):
        caps["last"].tl("blocks.0.hook_resid_post", stream="expanded")
    same = probelab.capture(model, tok, ["abcd", "wxyz"], select="all")
    assert next(iter(same.to_tl_cache().values())).shape == (2, 5, model.config.hidden_size)
    path = tl_names.save_tl_cache(caps["last"], tmp_path / "cache.safetensors")
    back = load_file(str(path))
    assert set(back) == set(caps["last"].to_tl_cache())
    assert torch.equal(back["blocks.1.hook_resid_post"], caps["last"].layer(2))
    subset = probelab.capture(model, tok, TEXTS, select="last", layers=[1, 3])
    with pytest.raises(CaptureError, match="does not hold"):
        subset.tl("blocks.0.hook_resid_pre")
    assert torch.equal(subset.tl("blocks.2.hook_resid_post"), subset.layer(3))


# ---- SAEs named the TransformerLens way load onto the HF model ------------------------------------
def test_sae_saved_under_a_tl_hook_name_reads_the_same_site(tmp_path):
    from probelab.models.tiny import tiny_llama, tiny_tokenizer

    model, tok = tiny_llama(), tiny_tokenizer()
    hf = tiny_sae(hook_name="model.layers.1", seed=3)
    tl = tiny_sae(hook_name="blocks.1.hook_resid_post", seed=3)  # what sae-lens writes for a TL model
    tl.save_model(tmp_path / "tl")
    assert json.loads((tmp_path / "tl" / "cfg.json").read_text())["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    loaded = load_sae(tmp_path / "tl")
    assert check_sae_fits(loaded, model) == check_sae_fits(hf, model) == 2
    a = inspect_text(model, tok, hf, "the cat sat", labels=None)
    b = inspect_text(model, tok, loaded, "the cat sat", labels=None)
    assert a["site"] == b["site"] == 2
    assert [r["by_attribution"] for r in a["tokens"]] == [r["by_attribution"] for r in b["tokens"]]
    assert [r["by_activation"] for r in a["tokens"]] == [r["by_activation"] for r in b["tokens"]]
    pre = tiny_sae(hook_name="blocks.2.hook_resid_pre", seed=3)  # the same tensor, the other TL name
    assert check_sae_fits(pre, model) == 2
    with pytest.raises(ProbelabError, match="names block 4, but the model has only 4 blocks"):
        check_sae_fits(tiny_sae(hook_name="blocks.4.hook_resid_pre"), model)


def test_docs_tl_names_example_runs():
    import doctest
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "tl_names.md"
    result = doctest.testfile(str(doc), module_relative=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0


def test_probelab_trained_sae_records_both_hook_names(tmp_path, monkeypatch):
    from probelab.sae.train import SAETrainConfig, read_meta, train_sae

    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path / "cache"))
    cfg = SAETrainConfig(model="tiny-llama", layer=2, d_sae=32, k=4, cache_tokens=1500, training_tokens=1024,
                         batch_tokens=128, context_size=32, store_batch_prompts=4, n_batches_in_buffer=8,
                         n_batches_for_norm_estimate=1, n_eval_texts=2, lr_warm_up_steps=1)
    sae = train_sae(cfg, tmp_path / "sae", progress=False)
    meta = read_meta(tmp_path / "sae")
    assert sae.cfg.metadata.hook_name == meta["hook_name"] == "model.layers.1"
    assert meta["tl_hook_name"] == "blocks.1.hook_resid_post"
    assert resid_index(meta["tl_hook_name"]) == resid_index(meta["hook_name"]) == meta["resid_index"] == 2
