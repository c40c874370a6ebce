"""The default capture backend: batched forward passes of an HF model with hooks.

Padding safety: texts are batched with the tokenizer's padding side (left or right); the attention
mask hides padding and explicit ``position_ids`` (count of real tokens before each position) make a
left-padded text see exactly the positions it would see alone. Token selection reads only real
tokens, so every text's states equal those of an unpadded single-text forward pass.

Devices: token ids go to the device of the model's embedding (:func:`probelab.models.devices.input_device`),
so a model on a GPU, or sharded over several with a ``device_map``, captures the same way. Each
layer's states are reduced (``last``/``mean``/``all``) on the device that computed them, as soon as
they are computed, and moved to the CPU in float32 at once: device memory holds one layer's
activations beyond what the forward pass itself needs, and the metrics downstream run in float32
whatever the model's dtype.

Only some layers: ``layers=[...]`` keeps those resid indices (and the other streams at those
indices) and stops the forward pass once the last of them is recorded; blocks above it, the final
norm and the LM head never run.

Long corpora: ``out=DIR`` writes the states to safetensors shards while capturing (at most about
one shard, :data:`probelab.capture.container.SHARD_BYTES`, is held in memory) and returns the
capture read back from ``DIR`` (ragged states are then read text by text, on access).

``mean``: the mean over a text's real tokens **except its first** (position 0), whatever that
token is. The first position of a decoder LM is an attention sink: with no earlier token to attend
to, it turns into a state whose norm is one to two orders of magnitude above the others in the
middle layers (SmolLM2, which adds no BOS, puts the sink on the first word), and it would dominate
the mean. With a tokenizer that adds a BOS, the excluded token is the BOS. A one-token text keeps its
only token. ``include_first=True`` averages every real token.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..errors import CaptureError
from .container import SHARD_BYTES, Captures, ShardWriter
from .recorder import Recorder, decoder_layers, record

SELECTIONS = ("last", "mean", "all")
# Captured states live in host memory (and on disk with ``out=``), in float32, whatever the model's device.
STORE_DEVICE = torch.device("cpu")
STORE_DTYPE = torch.float32


class _StopForward(Exception):
    """Raised by a hook once every requested layer is recorded: the rest of the forward pass is skipped."""


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (padding gets position 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _accepts(model, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def mean_keep(mask: torch.Tensor, include_first: bool = False) -> torch.Tensor:
    """The tokens ``select="mean"`` averages: real tokens except each text's first (kept when it is the only one).

    >>> mean_keep(torch.tensor([[1, 1, 1], [0, 1, 1], [0, 0, 1]])).int().tolist()
    [[0, 1, 1], [0, 0, 1], [0, 0, 1]]
    """
    mask = mask.bool()
    if include_first:
        return mask
    keep = mask.clone()
    first = mask.long().argmax(-1)  # index of the first real token (left or right padding)
    keep[torch.arange(mask.shape[0], device=mask.device), first] = False
    single = keep.sum(-1) == 0
    keep[single] = mask[single]
    return keep


def _select(h: torch.Tensor, mask: torch.Tensor, select: str, include_first: bool = False):
    """Reduce ``h [B, T, d]`` to one state per text (``last``/``mean``) or ragged real tokens (``all``)."""
    mask = mask.bool()
    if select == "last":
        T = mask.shape[1]
        last = T - 1 - mask.flip(-1).long().argmax(-1)  # index of the last real token
        return h[torch.arange(h.shape[0], device=h.device), last]
    if select == "mean":
        w = mean_keep(mask, include_first).to(h.dtype).unsqueeze(-1)
        return (h * w).sum(1) / w.sum(1)
    return [h[b, mask[b]] for b in range(h.shape[0])]


def normalise_layers(layers, n_layers: int) -> list[int] | None:
    """``None`` (every layer) or sorted unique resid indices in ``0..n_layers``; negatives count from the end."""
    if layers is None:
        return None
    if isinstance(layers, int):
        layers = [layers]
    out = set()
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise CaptureError(f"layers must be integers, not {layer!r}")
        i = layer + n_layers + 1 if layer < 0 else layer
        if not 0 <= i <= n_layers:
            raise CaptureError(f"layer {layer} out of range: the model has resid layers 0..{n_layers}")
        out.add(i)
    if not out:
        raise CaptureError("layers is empty; leave it out to capture every layer")
    return sorted(out)


def _check_texts(texts, select: str) -> list[str]:
    if select not in SELECTIONS:
        raise CaptureError(f"unknown token selection {select!r}; choose one of {', '.join(SELECTIONS)}")
    if isinstance(texts, str):
        raise CaptureError("texts must be a list of strings, not one string")
    texts = list(texts)
    if not texts:
        raise CaptureError("the text list is empty")
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        raise CaptureError("texts must be non-empty strings")
    return texts


@torch.no_grad()
def capture_hf(model, tokenizer, texts: list[str], select: str = "last", batch_size: int = 32,
               max_length: int | None = None, progress: bool | None = None, layers=None, out=None,
               overwrite: bool = False, include_first: bool = False, shard_bytes: int = SHARD_BYTES) -> Captures:
    from ..models.devices import input_device, model_dtype
    from ..paths import atomic_dir

    texts = _check_texts(texts, select)
    if batch_size < 1:
        raise CaptureError(f"batch_size must be at least 1, not {batch_size}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    blocks = decoder_layers(model)
    wanted = normalise_layers(layers, len(blocks))
    device = input_device(model)
    meta = {"backend": "hf", "model": getattr(model.config, "_name_or_path", ""),
            "padding_side": tokenizer.padding_side, "model_dtype": str(model_dtype(model)).removeprefix("torch."),
            "device": str(device), "mean_excludes": "none" if include_first else "first token"}
    if out is None:
        return _run(model, tokenizer, texts, select, batch_size, max_length, progress, blocks, wanted, device,
                    include_first, meta, None)
    with atomic_dir(out, overwrite=overwrite, kind="captures") as tmp:
        writer = ShardWriter(tmp, select == "all", shard_bytes)
        caps = _run(model, tokenizer, texts, select, batch_size, max_length, progress, blocks, wanted, device,
                    include_first, meta, writer)
        import json

        (tmp / "captures.json").write_text(json.dumps(caps.header(writer.finish()), indent=1))
    return Captures.load(out)


def _run(model, tokenizer, texts, select, batch_size, max_length, progress, blocks, wanted, device,
         include_first, meta, writer: ShardWriter | None) -> Captures:
    per_stream: dict[str, dict[int, list]] = {}
    tokens: list[list[str]] = []
    layer_ids: dict[str, list[int]] | None = None
    stop_at = wanted[-1] if wanted is not None and wanted[-1] < len(blocks) else None
    extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}  # no full-vocab logits
    bar = tqdm(total=len(texts), desc="capture", unit="text", disable=progress is False,
               delay=0 if progress else 2.0)  # by default a bar appears only when it takes over 2 s
    try:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=max_length is not None,
                            max_length=max_length)
            ids_cpu, mask_cpu = enc["input_ids"], enc["attention_mask"]
            for b in range(ids_cpu.shape[0]):
                tokens.append(tokenizer.convert_ids_to_tokens(ids_cpu[b][mask_cpu[b].bool()].tolist()))
            ids, mask = ids_cpu.to(device), mask_cpu.to(device)
            masks = {mask.device: mask}
            skipped: set[tuple[str, int]] = set()

            def reduce(stream: str, layer: int, h: torch.Tensor):
                if wanted is not None and layer not in wanted:
                    return None
                if h.dim() == 2:  # per-token scalars such as an interpolation weight
                    h = h.unsqueeze(-1)
                if tuple(h.shape[:2]) != tuple(mask.shape):
                    skipped.add((stream, layer))  # e.g. a block output with extra slots, recorded again later
                    return None
                m = masks.get(h.device)
                if m is None:
                    m = masks[h.device] = mask.to(h.device)
                if select == "mean":
                    h = h.to(STORE_DTYPE)
                r = _select(h, m, select, include_first)
                if select == "all":
                    return [x.to(STORE_DEVICE, STORE_DTYPE) for x in r]
                return r.to(STORE_DEVICE, STORE_DTYPE)

            rec = Recorder(transform=reduce)
            with record(model, rec), _stop_before(blocks, stop_at):
                try:
                    model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                          use_cache=False, **extra)
                except _StopForward:
                    pass
            lost = sorted(k for k in skipped if k[1] not in rec.data.get(k[0], {}))
            if lost:
                raise CaptureError(f"stream {lost[0][0]!r} layer {lost[0][1]}: states do not match the tokens "
                                   f"(shape differs from [batch, tokens])")
            got = {s: sorted(v) for s, v in rec.data.items() if v}
            if layer_ids is None:
                layer_ids = got
            elif got != layer_ids:
                raise CaptureError("the model recorded different layers for different batches")
            batch = {}
            for s, by_layer in rec.data.items():
                if not by_layer:
                    continue
                if select == "all":
                    batch[s] = [torch.stack(t) for t in zip(*[by_layer[l] for l in layer_ids[s]])]
                else:
                    batch[s] = torch.stack([by_layer[l] for l in layer_ids[s]])
            if writer is not None:
                writer.add(batch, len(chunk))
            else:
                for s, v in batch.items():
                    per_stream.setdefault(s, []).append(v)
            bar.update(len(chunk))
    finally:
        bar.close()
    layer_ids = layer_ids or {}
    states: dict = {}
    if writer is None:
        for s, parts in per_stream.items():
            states[s] = [t for part in parts for t in part] if select == "all" else torch.cat(parts, dim=1)
    return Captures(texts, tokens, select, layer_ids, states, meta)


class _stop_before:
    """Context manager: a pre-hook on ``blocks[index]`` that ends the forward pass (no-op for ``None``).

    A pre-hook of the next block fires after every stream of layer ``index`` is recorded, including
    streams a recordable model puts after its block returns."""

    def __init__(self, blocks, index: int | None) -> None:
        self.blocks, self.index, self.handle = blocks, index, None

    def __enter__(self):
        if self.index is not None:
            def stop(_mod, _args):
                raise _StopForward

            self.handle = self.blocks[self.index].register_forward_pre_hook(stop)
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()
        return False
