"""Load an SAE (sae-lens format) and check that it fits a model.

Sources, in the order :func:`load_sae` tries them:

- ``"default"``: probelab's SAE for the embedded SmolLM2 (trained once and cached, see
  :func:`probelab.sae.train.ensure_default_sae`);
- a local folder holding sae-lens' ``cfg.json`` + ``sae_weights.safetensors`` (``SAE.load_from_disk``);
- ``"<release>:<sae_id>"`` or ``release=..., sae_id=...``: a pretrained sae-lens release
  (``SAE.from_pretrained``), downloaded only when network access is allowed.

>>> from probelab.sae.tiny import tiny_sae
>>> from probelab.models.tiny import tiny_llama
>>> check_sae_fits(tiny_sae(d_in=64, hook_name="model.layers.1"), tiny_llama())
2
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import NetworkDisabled, ProbelabError
from ..paths import network_allowed
from .site import SAESiteError, resid_index

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"


def hook_name_of(sae) -> str:
    """The hook name an sae-lens SAE was trained on (``cfg.metadata.hook_name``)."""
    meta = getattr(sae.cfg, "metadata", None)
    name = getattr(meta, "hook_name", None) if meta is not None else None
    if not name:
        raise SAESiteError("the SAE config has no hook name (cfg.metadata.hook_name); cannot place it on the model")
    return str(name)


def check_sae_fits(sae, model) -> int:
    """Return the residual index the SAE reads; one-line error if width or layer do not fit ``model``."""
    index = resid_index(hook_name_of(sae))
    d_model = int(model.config.hidden_size)
    n_layers = int(model.config.num_hidden_layers)
    if int(sae.cfg.d_in) != d_model:
        raise SAESiteError(
            f"SAE width mismatch: the SAE reads d_in={sae.cfg.d_in} but the model's hidden size is {d_model}"
        )
    if index == n_layers and hook_name_of(sae).endswith(".hook_resid_pre"):
        raise SAESiteError(f"SAE layer mismatch: hook {hook_name_of(sae)!r} names block {n_layers}, "
                           f"but the model has only {n_layers} blocks (0..{n_layers - 1})")
    if index > n_layers:
        raise SAESiteError(
            f"SAE layer mismatch: hook {hook_name_of(sae)!r} is residual index {index}, "
            f"but the model has only {n_layers} blocks (indices 0..{n_layers})"
        )
    return index


def check_default_fits(model) -> None:
    """Raise a one-line :class:`SAESiteError` if the default SAE (trained for the embedded SmolLM2 at
    residual index 13, d_in 576) cannot be placed on ``model``: checked before the default SAE is
    loaded, so a model it does not fit never starts its training (:data:`probelab.sae.train.TRAIN_TIME`)."""
    from .train import SAETrainConfig

    layer, d_in = SAETrainConfig().layer, 576  # SmolLM2-135M's hidden size
    d_model, n_layers = int(model.config.hidden_size), int(model.config.num_hidden_layers)
    if d_model != d_in or layer > n_layers:
        raise SAESiteError(f"the default SAE (for smollm2-135m: d_in={d_in}, residual index {layer}) does not fit this "
                           f"model (hidden size {d_model}, {n_layers} blocks); train one for it: probelab sae train "
                           "--model MODEL --out DIR, then pass --sae DIR")


def load_sae(source: str | Path = "default", *, release: str | None = None, sae_id: str | None = None,
             allow_network: bool | None = None, device: str = "cpu", progress: bool = True,
             train_if_missing: bool = True):
    """An sae-lens ``SAE`` from a folder, ``"default"``, or (with network allowed) a pretrained release.

    ``"default"`` trains the default SAE on first use (:data:`probelab.sae.train.TRAIN_TIME`) unless
    ``train_if_missing=False``, which raises a one-line error instead.
    """
    from sae_lens import SAE

    if release is not None or sae_id is not None:
        if not (release and sae_id):
            raise ProbelabError("a pretrained SAE needs both release and sae_id")
        return _from_pretrained(release, sae_id, allow_network, device)
    key = str(source)
    if key == "default":
        from .train import default_sae_path, ensure_default_sae

        if not train_if_missing and not (default_sae_path() / CFG_FILE).is_file():
            raise ProbelabError("the default SAE is not trained yet; run: probelab sae train")
        return ensure_default_sae(progress=progress).to(device)
    path = Path(key).expanduser()
    if path.is_dir():
        cfg, weights = path / CFG_FILE, path / WEIGHTS_FILE
        if not cfg.is_file() or not weights.is_file():
            raise ProbelabError(f"{path} is not an sae-lens SAE folder (needs {CFG_FILE} and {WEIGHTS_FILE})")
        try:
            json.loads(cfg.read_text())
        except json.JSONDecodeError as e:
            raise ProbelabError(f"{cfg} is not valid JSON ({e.msg}, line {e.lineno})") from None
        try:
            sae = SAE.load_from_disk(str(path), device=device)
        except Exception as e:  # sae-lens raises KeyError/ValueError/safetensors errors on bad folders
            raise ProbelabError(f"cannot load the SAE in {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
        return sae.eval()
    if path.exists() or key.startswith((".", "/", "~")):
        raise ProbelabError(f"SAE folder {path} does not exist")
    if ":" in key:
        rel, sid = key.split(":", 1)
        return _from_pretrained(rel, sid, allow_network, device)
    raise ProbelabError(f"unknown SAE {key!r}: give 'default', an SAE folder, or '<release>:<sae_id>' with --allow-network")


def _from_pretrained(release: str, sae_id: str, allow_network: bool | None, device: str):
    if not network_allowed(allow_network):
        raise NetworkDisabled(
            f"the pretrained SAE {release}/{sae_id} needs a download; pass --allow-network "
            "(or PROBELAB_ALLOW_NETWORK=1), or give a local SAE folder"
        )
    from sae_lens import SAE

    try:
        return SAE.from_pretrained(release, sae_id, device=device).eval()
    except Exception as e:
        raise ProbelabError(f"cannot load pretrained SAE {release}/{sae_id}: {str(e).splitlines()[0]}") from None


def sae_dtype(sae) -> torch.dtype:
    return next(sae.parameters()).dtype
