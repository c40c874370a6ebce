"""``load_model(name_or_path)``: one entry point for named, local and (opt-in) hub models.

Resolution order: a registered name → a local folder → a hub id (only with network allowed).
Local folders load through a small registry of *folder kinds*: a config.json carrying an
``expansion`` block is a Control LLM checkpoint, one with ``cocomix`` a CoCoMix model, anything else
a plain ``AutoModelForCausalLM``. Weights load only from safetensors; ``trust_remote_code`` is never set.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from ..errors import ModelNotFound, NetworkDisabled, ProbelabError
from ..paths import atomic_dir, network_allowed
from .registry import MODELS, ModelSpec

# key in config.json -> loader(folder, dtype) -> model. Model packages register themselves here.
FOLDER_KINDS: dict[str, Callable[[Path, torch.dtype], torch.nn.Module]] = {}


def register_folder_kind(config_key: str, loader: Callable[[Path, torch.dtype], torch.nn.Module]) -> None:
    FOLDER_KINDS[config_key] = loader


def _read_config(folder: Path) -> dict:
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ModelNotFound(f"{folder} is not a model folder (no config.json)")
    try:
        return json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ModelNotFound(f"{cfg_file} is not valid JSON ({e.msg}, line {e.lineno})") from None


def _check_weights(folder: Path) -> None:
    files = list(folder.glob("*.safetensors"))
    if not files:
        if list(folder.glob("*.bin")) or list(folder.glob("*.pt")):
            raise ProbelabError(f"{folder} holds only pickle weights (.bin/.pt); probelab loads safetensors only")
        raise ModelNotFound(f"{folder} has no *.safetensors weights")
    from safetensors import safe_open

    for f in files:
        try:
            with safe_open(str(f), framework="pt") as sf:
                keys = list(sf.keys())
                if keys:
                    sf.get_slice(keys[-1])  # touches the header and the last tensor's extent
            size = f.stat().st_size
            with open(f, "rb") as fh:
                header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(Path(f).open("rb").read(8 + header_len)[8:])
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + header_len + end > size:
                raise ValueError("file is truncated")
        except Exception as e:  # safetensors raises several types for a bad header
            raise ProbelabError(f"corrupt safetensors file {f}: {str(e).splitlines()[0]}") from None


def load_folder(folder: str | Path, dtype: torch.dtype = torch.float32):
    """Load a local HF folder (plain, Control LLM or CoCoMix) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if not folder.exists():
        raise ModelNotFound(f"model folder {folder} does not exist")
    cfg = _read_config(folder)
    _check_weights(folder)
    _import_model_kinds()
    loader = next((fn for key, fn in FOLDER_KINDS.items() if key in cfg), None)
    try:
        if loader is not None:
            model = loader(folder, dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True)
        tok = AutoTokenizer.from_pretrained(folder)
    except ProbelabError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ProbelabError(f"cannot load model from {folder}: {str(e).splitlines()[0]}") from None
    _ensure_pad(tok)
    return model.eval(), tok


def save_hf_folder(model, folder: str | Path, tokenizer=None) -> Path:
    """Write ``model`` (``save_pretrained``, safetensors) and ``tokenizer`` if given to ``folder``, atomically
    (:func:`probelab.paths.atomic_dir`); returns ``Path(folder)``. :func:`load_folder` reads it back."""
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(folder)


def _ensure_pad(tok) -> None:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token


def _import_model_kinds() -> None:
    """Model packages register folder kinds when imported; import the known ones lazily."""
    import importlib

    for mod in ("probelab.models.control", "probelab.models.cocomix"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def _load_spec(spec: ModelSpec, dtype: torch.dtype, allow_network: bool | None):
    if spec.source == "random":
        from .tiny import tiny_tokenizer

        return spec.build().to(dtype), tiny_tokenizer()
    if spec.source == "embedded":
        from .embedded import materialize_embedded

        return load_folder(materialize_embedded(spec.name), dtype)
    if spec.source == "hub":
        return load_hub(spec.hub_id, dtype, allow_network)
    raise ProbelabError(f"model {spec.name!r} has unknown source {spec.source!r}")


def load_hub(hub_id: str, dtype: torch.dtype = torch.float32, allow_network: bool | None = None):
    """Download from the hub (opt-in). Pickle weights are refused (``use_safetensors=True``)."""
    if not network_allowed(allow_network):
        local = ", ".join(n for n, s in MODELS.items() if s.source != "hub")
        raise NetworkDisabled(
            f"{hub_id!r} needs a hub download; pass --allow-network (or PROBELAB_ALLOW_NETWORK=1), "
            f"or use a local folder or one of: {local}"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(hub_id, dtype=dtype, use_safetensors=True)
        tok = AutoTokenizer.from_pretrained(hub_id)
    except OSError as e:
        raise ModelNotFound(f"cannot download {hub_id!r}: {str(e).splitlines()[0]}") from None
    _ensure_pad(tok)
    return model.eval(), tok


def load_model(name_or_path: str | Path = "smollm2-135m", *, dtype: torch.dtype = torch.float32,
               allow_network: bool | None = None):
    """Return ``(model, tokenizer)`` for a registered name, a local folder, or (opt-in) a hub id.

    >>> model, tok = load_model("tiny-llama")
    >>> model.config.num_hidden_layers
    4
    """
    key = str(name_or_path)
    if key in MODELS:
        return _load_spec(MODELS[key], dtype, allow_network)
    path = Path(key).expanduser()
    if path.exists() or key.startswith((".", "/", "~")) or key.count("/") > 1:
        return load_folder(path, dtype)
    if key.count("/") == 1:
        return load_hub(key, dtype, allow_network)
    names = ", ".join(MODELS)
    raise ModelNotFound(f"unknown model {key!r}; known names: {names}; or give a local folder")
