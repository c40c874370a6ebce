"""Content-addressed cache of captured states and UMAP maps (a re-run skips model loading).

A cache entry is a safetensors file of numpy arrays plus a JSON header, named by the hash of
everything its content depends on: for captures, the model's weights and config, the tokenizer,
the probe texts and the capture code's version; for UMAP maps, the input points and the UMAP
parameters. Change any of them and the key changes; nothing is ever invalidated by hand.

Hashing a model folder's weights reads every byte once; a small index keyed by (path, size,
mtime, inode) remembers each file's digest, the way ``git`` remembers file stats, so a later
run re-hashes only files that changed on disk.

>>> key("umap", [1, 2], "cosine") == key("umap", [1, 2], "cosine")
True
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..locks import file_lock
from ..paths import atomic_write_bytes, cache_dir

VERSION = 1  # bump when the meaning of a cached array changes
_CHUNK = 1 << 22


def _hasher():
    return hashlib.blake2b(digest_size=20)


def key(*parts) -> str:
    """Hex digest of JSON-serialisable parts (strings, numbers, lists, dicts, bytes, numpy arrays)."""
    h = _hasher()
    h.update(f"probelab.align.v{VERSION}".encode())
    for part in parts:
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"nd:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
        elif isinstance(part, (bytes, bytearray)):
            h.update(b"b:" + bytes(part))
        else:
            h.update(b"j:" + json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


def root() -> Path:
    r = cache_dir() / "align"
    r.mkdir(parents=True, exist_ok=True)
    return r


# ---- fingerprints of models and tokenizers ------------------------------------------------------
def _stat_id(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def file_digest(path: str | Path) -> str:
    """Digest of a file's bytes, memoised by its stat in ``<cache>/align/file-digests.json``."""
    path = Path(path)
    index_file = root() / "file-digests.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, json.JSONDecodeError):
        index = {}
    sid = _stat_id(path)
    if sid in index:
        return index[sid]
    h = _hasher()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    with file_lock(index_file.with_name(".file-digests.lock"), timeout=60, what=index_file):
        try:  # re-read under the lock: another process may have added entries meanwhile
            index = json.loads(index_file.read_text())
        except (OSError, json.JSONDecodeError):
            index = {}
        index = {k: v for k, v in index.items() if Path(k.split("|", 1)[0]).exists()}  # forget deleted files
        index[sid] = digest
        atomic_write_bytes(index_file, json.dumps(index).encode())
    return digest


def folder_fingerprint(folder: str | Path) -> str:
    """Fingerprint of a model folder: names and digests of its top-level files."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return key("folder", [(p.name, file_digest(p)) for p in files])


def model_fingerprint(model) -> str:
    """Fingerprint of an in-memory model: its config and every parameter/buffer's bytes."""
    import torch

    h = _hasher()
    cfg = getattr(model, "config", None)
    h.update(type(model).__name__.encode())
    if cfg is not None and hasattr(cfg, "to_json_string"):
        h.update(cfg.to_json_string(use_diff=False).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _sample_digest(model) -> str:
    """A cheap digest of an in-memory model: every tensor's name, shape, dtype and first and last
    1024 values (catches weights changed after loading without hashing them all)."""
    import torch

    h = _hasher()
    for name, t in model.state_dict().items():
        flat = t.detach().reshape(-1)
        part = torch.cat([flat[:1024], flat[-1024:]]) if flat.numel() > 2048 else flat
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(part.cpu().contiguous().view(torch.uint8).numpy().tobytes() if part.numel() else b"")
    return h.hexdigest()


def weights_key(model) -> str:
    """What a model's outputs depend on, keyed by content, never by path: a model loaded from a
    folder (``config._name_or_path``) is the digest of the folder's files (memoised by size, mtime
    and inode, so replacing the files in place changes it) plus a sample of the in-memory weights;
    any other model is the digest of all its weights."""
    folder = Path(str(getattr(getattr(model, "config", None), "_name_or_path", "") or ""))
    if str(folder) and folder.is_dir() and any(folder.glob("*.safetensors")):
        return key("weights-folder", folder_fingerprint(folder), _sample_digest(model))
    return key("weights-memory", model_fingerprint(model))


def tokenizer_fingerprint(tok) -> str:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:  # padding/truncation settings change as a side effect of calls: not identity
        spec = json.loads(backend.to_str())
        spec.pop("padding", None)
        spec.pop("truncation", None)
        body = json.dumps(spec, sort_keys=True)
    else:
        body = json.dumps(sorted(tok.get_vocab().items()))
    specials = {k: str(v) for k, v in sorted(getattr(tok, "special_tokens_map", {}).items())}
    return key("tokenizer", body, specials, getattr(tok, "add_bos_token", None))


# ---- array store ------------------------------------------------------------------------------
def _entry(kind: str, k: str) -> Path:
    return root() / kind / k[:2] / f"{k}.safetensors"


def load_arrays(kind: str, k: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """The arrays and header stored under ``kind/k``, or ``None`` (a damaged entry counts as missing)."""
    from safetensors import safe_open

    path = _entry(kind, k)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as f:
            arrays = {name: f.get_tensor(name) for name in f.keys()}
            meta = json.loads((f.metadata() or {}).get("probelab", "{}"))
    except Exception:
        return None
    return arrays, meta


def save_arrays(kind: str, k: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    from safetensors.numpy import save

    data = save({n: np.ascontiguousarray(a) for n, a in arrays.items()}, metadata={"probelab": json.dumps(meta)})
    atomic_write_bytes(_entry(kind, k), data)
