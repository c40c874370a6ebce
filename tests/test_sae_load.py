"""SAE sites, loading, save/load round trips and fit checks."""
from __future__ import annotations

import json

import pytest
import torch

from probelab.errors import NetworkDisabled, ProbelabError
from probelab.models.tiny import tiny_llama
from probelab.sae import SAESiteError, check_sae_fits, hf_hook_name, load_sae, resid_index
from probelab.sae.tiny import tiny_sae


@pytest.mark.parametrize("hook,index", [
    ("model.layers.12", 13), ("model.layers.0", 1), ("transformer.h.5", 6), ("gpt_neox.layers.3", 4),
    ("blocks.8.hook_resid_post", 9), ("blocks.8.hook_resid_pre", 8), ("blocks.0.hook_resid_pre", 0),
])
def test_hook_names_map_to_capture_indices(hook, index):
    assert resid_index(hook) == index


def test_hf_hook_name_inverts_resid_index():
    for i in range(1, 31):
        assert resid_index(hf_hook_name(i)) == i
    with pytest.raises(SAESiteError):
        hf_hook_name(0)


@pytest.mark.parametrize("hook", ["blocks.3.hook_mlp_out", "blocks.3.attn.hook_z", "", "model.layers.x"])
def test_non_residual_hooks_are_refused(hook):
    with pytest.raises(SAESiteError, match="not a residual-stream site"):
        resid_index(hook)


def test_save_load_round_trip_keeps_outputs(tmp_path):
    sae = tiny_sae(seed=3)
    sae.save_model(tmp_path / "s")  # sae-lens' own writer
    back = load_sae(tmp_path / "s")
    assert type(back).__name__ == "TopKSAE" and back.cfg.metadata.hook_name == "model.layers.1"
    x = torch.randn(3, 7, 64)
    torch.testing.assert_close(back(x), sae(x))
    torch.testing.assert_close(back.encode(x), sae.encode(x))


def test_sae_trained_with_rescaled_decoder_loads(tmp_path):
    """A sae-lens *training* SAE saved for inference (norms folded) loads and reproduces its encoder."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    cfg = TopKTrainingSAEConfig(d_in=64, d_sae=96, k=4, metadata=SAEMetadata(hook_name="model.layers.2"))
    train = TopKTrainingSAE(cfg)
    with torch.no_grad():
        train.W_dec.mul_(torch.rand(96, 1) + 0.5)  # non-unit decoder norms
    train.save_inference_model(str(tmp_path / "t"))
    back = load_sae(tmp_path / "t")
    x = torch.randn(10, 64)
    torch.testing.assert_close(back.decode(back.encode(x)), train.decode(train.encode(x)), rtol=1e-4, atol=1e-5)
    assert check_sae_fits(back, tiny_llama()) == 3


def test_fit_check_reports_width_and_layer():
    model = tiny_llama()  # 4 blocks, d64
    assert check_sae_fits(tiny_sae(hook_name="model.layers.3"), model) == 4
    with pytest.raises(SAESiteError, match="width mismatch: the SAE reads d_in=32"):
        check_sae_fits(tiny_sae(d_in=32), model)
    with pytest.raises(SAESiteError, match="layer mismatch"):
        check_sae_fits(tiny_sae(hook_name="model.layers.9"), model)


def test_bad_sources_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("PROBELAB_ALLOW_NETWORK", raising=False)
    with pytest.raises(ProbelabError, match="does not exist"):
        load_sae(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProbelabError, match="not an sae-lens SAE folder"):
        load_sae(tmp_path / "empty")
    bad = tmp_path / "bad"
    tiny_sae().save_model(bad)
    (bad / "cfg.json").write_text("{not json")
    with pytest.raises(ProbelabError, match="not valid JSON"):
        load_sae(bad)
    trunc = tmp_path / "trunc"
    tiny_sae().save_model(trunc)
    data = (trunc / "sae_weights.safetensors").read_bytes()
    (trunc / "sae_weights.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(ProbelabError, match="cannot load the SAE"):
        load_sae(trunc)
    with pytest.raises(NetworkDisabled, match="--allow-network"):
        load_sae("gpt2-small-res-jb:blocks.8.hook_resid_pre")
    with pytest.raises(NetworkDisabled):
        load_sae(release="gpt2-small-res-jb", sae_id="blocks.8.hook_resid_pre")
    with pytest.raises(ProbelabError, match="unknown SAE"):
        load_sae("no-such-sae")


def test_missing_hook_name_is_reported(tmp_path):
    sae = tiny_sae()
    sae.save_model(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    cfg["metadata"].pop("hook_name")
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAESiteError, match="no hook name"):
        check_sae_fits(load_sae(tmp_path / "s"), tiny_llama())


def test_default_sae_is_not_trained_by_info(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path))
    with pytest.raises(ProbelabError, match="not trained yet; run: probelab sae train"):
        load_sae("default", train_if_missing=False)
