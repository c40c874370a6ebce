"""Model registry and loading: names, local folders, hub opt-in, corrupt files."""
import json

import pytest
import torch

from probelab.errors import ModelNotFound, NetworkDisabled, ProbelabError
from probelab.models import MODELS, load_model


def save_tiny(tmp_path, tiny):
    model, tok = tiny
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_registry_lists_sources():
    assert MODELS["smollm2-135m"].source == "embedded"
    assert MODELS["tiny-llama"].is_cached()
    assert {s.source for s in MODELS.values()} == {"embedded", "random", "hub"}


def test_local_folder_round_trip(tmp_path, tiny):
    folder = save_tiny(tmp_path, tiny)
    model, tok = load_model(folder)
    ids = torch.tensor([[256, 70, 71, 72]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, tiny[0](ids).logits, atol=1e-6)
    assert tok.pad_token is not None


def test_unknown_name_lists_known_names():
    with pytest.raises(ModelNotFound, match="unknown model 'nope'.*smollm2-135m"):
        load_model("nope")


def test_missing_folder():
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_model("./no/such/folder")


def test_hub_needs_network(monkeypatch):
    monkeypatch.delenv("PROBELAB_ALLOW_NETWORK", raising=False)
    with pytest.raises(NetworkDisabled, match="allow-network.*smollm2-135m"):
        load_model("gpt2")
    with pytest.raises(NetworkDisabled):
        load_model("someorg/some-model")


def test_truncated_safetensors_is_reported(tmp_path, tiny):
    folder = save_tiny(tmp_path, tiny)
    f = folder / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProbelabError, match="corrupt safetensors"):
        load_model(folder)


def test_garbage_safetensors_is_reported(tmp_path, tiny):
    folder = save_tiny(tmp_path, tiny)
    (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ProbelabError, match="corrupt safetensors"):
        load_model(folder)


def test_pickle_weights_refused(tmp_path, tiny):
    folder = save_tiny(tmp_path, tiny)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ProbelabError, match="pickle"):
        load_model(folder)


def test_bad_config(tmp_path, tiny):
    folder = save_tiny(tmp_path, tiny)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelNotFound, match="not valid JSON"):
        load_model(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ModelNotFound, match="no config.json"):
        load_model(folder)


def test_tiny_qwen_is_a_second_architecture():
    model, _ = load_model("tiny-qwen2")
    assert model.config.model_type == "qwen2"
    assert json.loads(model.config.to_json_string())["num_hidden_layers"] == 4
