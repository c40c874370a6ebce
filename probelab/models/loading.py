"""``load_model(name_or_path)``: one entry point for named, local and (opt-in) hub models.

Resolution order: a registered name → a local folder → a hub id (only with network allowed).
Local folders load through a small registry of *folder kinds*: a config.json carrying an
``expansion`` block is a Control LLM checkpoint, one with ``cocomix`` a CoCoMix model, anything else
a plain ``AutoModelForCausalLM``. Weights load only from safetensors; ``trust_remote_code`` is never set.

Placement: ``device`` / ``dtype`` (default ``"auto"``: :mod:`probelab.models.devices`) or a
``device_map`` (a dict of module name -> device, or ``"auto"`` / ``"balanced"`` / ...: Accelerate's
big-model inference, which shards the blocks over the GPUs and, when they are full, CPU RAM).
``device="auto"`` picks ``device_map="auto"`` by itself when several GPUs are visible or the
checkpoint does not fit in the free memory of one. Plain folders load straight onto their device
(transformers >= 5 builds the model on the meta device and streams the safetensors shards in, the
``low_cpu_mem_usage`` behaviour: peak host memory is about one shard, not the model twice).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from ..errors import ModelNotFound, NetworkDisabled, ProbelabError
from ..paths import atomic_dir, network_allowed
from .devices import resolve_device, resolve_dtype
from .registry import MODELS, ModelSpec

# free GPU memory a model may take before device="auto" shards it (activations need the rest)
FIT_FRACTION = 0.85
_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
          "F8_E4M3": 1, "F8_E5M2": 1}

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


def _shape_mismatch(folder: Path) -> str:
    """The first weight whose shape differs from what config.json builds (for a one-line error)."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in
                    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).state_dict().items()}
        n, first = 0, None
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as sf:
                for k in sf.keys():
                    got = tuple(sf.get_slice(k).get_shape())
                    if k in want and want[k] != got:
                        n += 1
                        first = first or (k, got, want[k])
        if n:
            k, got, exp = first
            return (f"{n} weight(s) do not match config.json, e.g. {k} is {list(got)} in the file but {list(exp)} "
                    "by the config (a config.json from another model?)")
    except Exception:
        pass
    return "the weights' shapes do not match config.json (a config.json from another model?)"


def load_folder(folder: str | Path, dtype: torch.dtype | str = torch.float32, *,
                device: str | torch.device | None = None, device_map: dict | str | None = None):
    """Load a local HF folder (plain, Control LLM or CoCoMix) and its tokenizer.

    ``dtype`` as in :func:`load_model`; ``device`` (default: stay on CPU) or ``device_map`` places it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if not folder.exists():
        raise ModelNotFound(f"model folder {folder} does not exist")
    dtype = resolve_dtype(dtype, device or "cpu")
    cfg = _read_config(folder)
    _check_weights(folder)
    _import_model_kinds()
    loader = next((fn for key, fn in FOLDER_KINDS.items() if key in cfg), None)
    try:
        if loader is not None:  # probelab's own kinds: load on CPU, then place
            model = place_model(loader(folder, dtype), device, device_map)
        else:
            kw = {}
            if device_map is not None:
                kw["device_map"] = _check_device_map(device_map)
            elif device is not None and resolve_device(device).type != "cpu":
                kw["device_map"] = {"": str(resolve_device(device))}  # weights straight to the device
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True, **kw)
        tok = AutoTokenizer.from_pretrained(folder)
    except ProbelabError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        if "ignore_mismatched_sizes" in str(e):  # transformers refers to a report the CLI does not show
            raise ProbelabError(f"cannot load model from {folder}: {_shape_mismatch(folder)}") from None
        raise ProbelabError(f"cannot load model from {folder}: {str(e).splitlines()[0]}") from None
    _ensure_pad(tok)
    return model.eval(), tok


def _check_device_map(device_map):
    if isinstance(device_map, str):
        if device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
            raise ProbelabError(f"unknown device_map {device_map!r}; use auto, balanced, balanced_low_0, "
                                "sequential or a dict of module name -> device")
        return device_map
    if not isinstance(device_map, dict) or not device_map:
        raise ProbelabError("device_map must be a non-empty dict of module name -> device, or 'auto'")
    for dev in device_map.values():
        if dev != "disk":
            resolve_device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    return device_map


def place_model(model: torch.nn.Module, device: str | torch.device | None = None,
                device_map: dict | str | None = None) -> torch.nn.Module:
    """Move an in-memory model to ``device``, or dispatch it over ``device_map`` with Accelerate.

    A dict maps module names (``model.embed_tokens``, ``model.layers.0``, ..., ``lm_head``) to devices;
    a string (``auto``, ``balanced``, ...) lets Accelerate infer one, keeping each block whole.
    Dispatch always installs Accelerate's hooks (even when every entry is the same device), so each
    module receives its inputs on its own device.
    """
    if device_map is None:
        return model if device is None else model.to(resolve_device(device))
    from accelerate import dispatch_model, infer_auto_device_map

    device_map = _check_device_map(device_map)
    if isinstance(device_map, str):
        no_split = list(getattr(model, "_no_split_modules", None) or [])
        device_map = infer_auto_device_map(model, no_split_module_classes=no_split)
    return dispatch_model(model, device_map=device_map, force_hooks=True)


def checkpoint_bytes(folder: str | Path, dtype: torch.dtype | None = None) -> int:
    """Bytes the weights of ``folder`` take in memory in ``dtype`` (default: as stored), from the headers."""
    total = 0
    for f in Path(folder).glob("*.safetensors"):
        with open(f, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for k, v in header.items():
            if k == "__metadata__":
                continue
            n = 1
            for dim in v["shape"]:
                n *= dim
            stored = _BYTES.get(v["dtype"], 4)
            floating = v["dtype"].startswith(("F", "BF"))
            total += n * (torch.finfo(dtype).bits // 8 if (dtype is not None and floating) else stored)
    return total


def _auto_device_map(folder: Path | None, device: torch.device, dtype: torch.dtype) -> str | None:
    """``"auto"`` when several GPUs are visible or the checkpoint does not fit the one GPU, else None."""
    if device.type != "cuda":
        return None
    if torch.cuda.device_count() > 1:
        return "auto"
    if folder is not None:
        free, _total = torch.cuda.mem_get_info(device)
        if checkpoint_bytes(folder, dtype) > FIT_FRACTION * free:
            return "auto"
    return None


def save_hf_folder(model, folder: str | Path, tokenizer=None, overwrite: bool = False) -> Path:
    """Write ``model`` (``save_pretrained``, safetensors) and ``tokenizer`` if given to ``folder``, atomically
    (:func:`probelab.paths.atomic_dir`; ``overwrite`` replaces a folder probelab did not write); returns
    ``Path(folder)``. :func:`load_folder` reads it back."""
    with atomic_dir(folder, overwrite=overwrite, kind="model") as tmp:
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


def _load_spec(spec: ModelSpec, dtype: torch.dtype, allow_network: bool | None, device, device_map, auto: bool):
    if spec.source == "random":
        from .tiny import tiny_tokenizer

        return place_model(spec.build().to(dtype), device, device_map), tiny_tokenizer()
    if spec.source == "embedded":
        from .embedded import materialize_embedded

        return _load_local(materialize_embedded(spec.name), dtype, device, device_map, auto)
    if spec.source == "hub":
        return load_hub(spec.hub_id, dtype, allow_network, device=device, device_map=device_map, auto=auto)
    raise ProbelabError(f"model {spec.name!r} has unknown source {spec.source!r}")


def _load_local(folder: Path, dtype, device, device_map, auto: bool):
    if device_map is None and auto and folder.is_dir():
        device_map = _auto_device_map(folder, device, dtype)
    return load_folder(folder, dtype, device=None if device_map is not None else device, device_map=device_map)


def load_hub(hub_id: str, dtype: torch.dtype | str = torch.float32, allow_network: bool | None = None, *,
             device: str | torch.device | None = None, device_map: dict | str | None = None, auto: bool = False):
    """Download from the hub (opt-in). Pickle weights are refused (``use_safetensors=True``)."""
    if not network_allowed(allow_network):
        local = ", ".join(n for n, s in MODELS.items() if s.source != "hub")
        raise NetworkDisabled(
            f"{hub_id!r} needs a hub download; pass --allow-network (or PROBELAB_ALLOW_NETWORK=1), "
            f"or use a local folder or one of: {local}"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = resolve_dtype(dtype, device or "cpu")
    kw = {}
    if device_map is None and auto and device is not None and resolve_device(device).type == "cuda" \
            and torch.cuda.device_count() > 1:
        device_map = "auto"
    if device_map is not None:
        kw["device_map"] = _check_device_map(device_map)
    elif device is not None and resolve_device(device).type != "cpu":
        kw["device_map"] = {"": str(resolve_device(device))}
    try:
        model = AutoModelForCausalLM.from_pretrained(hub_id, dtype=dtype, use_safetensors=True, **kw)
        tok = AutoTokenizer.from_pretrained(hub_id)
    except OSError as e:
        raise ModelNotFound(f"cannot download {hub_id!r}: {str(e).splitlines()[0]}") from None
    _ensure_pad(tok)
    return model.eval(), tok


def load_model(name_or_path: str | Path = "smollm2-135m", *, device: str | torch.device = "auto",
               dtype: torch.dtype | str = "auto", device_map: dict | str | None = None,
               allow_network: bool | None = None):
    """Return ``(model, tokenizer)`` for a registered name, a local folder, or (opt-in) a hub id.

    ``device``: ``auto`` (CUDA, then MPS, else CPU), ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
    ``dtype``: ``auto`` (bfloat16 on a GPU that supports it, float32 on CPU), a name (``bfloat16``,
    ``bf16``, ``float16``, ``float32``) or a ``torch.dtype``. ``device_map``: a dict of module name ->
    device, or ``auto``/``balanced``/``sequential`` (Accelerate shards the model; ``device`` is then
    ignored). With ``device="auto"`` on a CUDA machine, ``device_map="auto"`` is chosen when several
    GPUs are visible or the checkpoint does not fit in 85% of the free memory of one.
    Send inputs to :func:`probelab.models.devices.input_device` ``(model)``.

    >>> model, tok = load_model("tiny-llama", dtype="bfloat16", device="cpu")
    >>> model.config.num_hidden_layers, next(model.parameters()).dtype
    (4, torch.bfloat16)
    """
    auto = device is None or str(device).strip().lower() in ("", "auto")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    key = str(name_or_path)
    if key in MODELS:
        return _load_spec(MODELS[key], dt, allow_network, dev, device_map, auto)
    path = Path(key).expanduser()
    if path.exists() or key.startswith((".", "/", "~")) or key.count("/") > 1:
        return _load_local(path, dt, dev, device_map, auto)
    if key.count("/") == 1:
        return load_hub(key, dt, allow_network, device=dev, device_map=device_map, auto=auto)
    names = ", ".join(MODELS)
    raise ModelNotFound(f"unknown model {key!r}; known names: {names}; or give a local folder")
