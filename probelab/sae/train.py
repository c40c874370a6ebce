"""Train a TopK SAE on a model's residual stream with sae-lens' training runner (CPU friendly).

Every default below is the result of tuning on this project's 2-core CPU (docs/sae.md has the
measurements); the first quick recipe it started from reached explained variance 0.21.

- text: offline Wikipedia intros (:mod:`probelab.sae.corpus`), 500 articles held out for evaluation;
- site: residual index 13 of SmolLM2 (output of block 12, sae-lens hook ``model.layers.12``);
- first position of every 128-token context skipped (``seqpos_slice``): it is BOS, the attention
  sink, with a residual norm ~200x the others; separator/BOS tokens are excluded the same way;
- inputs scaled to mean norm sqrt(d_in) (``expected_average_only_in``; folded into the saved
  weights, so the saved SAE reads raw residuals);
- dead latents: a short dead window so the TopK auxiliary loss starts reviving latents early;
- wandb off; sae-lens shows its own progress bar.

The trained folder is sae-lens format (``SAE.load_from_disk`` reads it) plus ``probelab.json``
with the training config, held-out quality numbers and wall time.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ProbelabError
from ..paths import atomic_dir, cache_dir, scratch_root
from .site import hf_hook_name, tl_hook_name

PROBELAB_FILE = "probelab.json"
DEFAULT_NAME = "smollm2-135m-l13-topk"
# how long `probelab sae train` takes with the defaults (docs/sae.md has the measurement and its command)
TRAIN_TIME = "about 4.5 min on a quiet 2-core CPU, several times longer on a busy one"


@dataclass
class SAETrainConfig:
    model: str = "smollm2-135m"     # probelab model name or local folder
    layer: int = 13                 # residual index (probelab.capture numbering): output of block 12
    d_sae: int = 2304               # latents (4x the SmolLM2 width of 576; 4608 left 50% dead in this budget)
    k: int = 32                     # active latents per token (TopK)
    cache_tokens: int = 160_000     # LM tokens run once and cached (phase 1; ~4-5 min)
    training_tokens: int = 960_000  # activations seen by the SAE (phase 2: 6 epochs over the cache)
    keep_activations: bool = False  # keep the phase-1 cache beside the SAE folder (for re-tuning)
    batch_tokens: int = 1024        # tokens per optimiser step
    context_size: int = 128         # tokens per LM context (contexts pack several intros)
    store_batch_prompts: int = 8    # LM batch (contexts) per activation-store refill step
    n_batches_in_buffer: int = 32   # mixing buffer, in contexts
    lr: float = 1e-3
    lr_warm_up_steps: int = 20
    lr_decay_fraction: float = 0.2  # linear decay over the last 20% of steps
    dead_feature_window: int = 100  # steps without firing before a latent counts as dead (aux loss)
    aux_loss_coefficient: float = 1.0
    normalize_activations: str = "expected_average_only_in"
    n_batches_for_norm_estimate: int = 16
    autocast_lm: Any = "auto"       # bf16 LM forward: true | false | auto (where bf16 is native: a GPU, an AVX512-BF16/AMX CPU); the SAE trains in fp32
    seed: int = 0
    n_heldout: int = 500            # held-out articles (never trained on)
    n_eval_texts: int = 200         # held-out articles used for the quality numbers
    device: str = "auto"            # where the LM and the SAE run (probelab.models.devices.resolve_device)
    dtype: str = "float32"          # the LM's weights (its forward runs under autocast_lm); the SAE is float32
    threads: int = 2
    extra: dict = field(default_factory=dict)  # any other LanguageModelSAERunnerConfig field

    @property
    def lm_autocast(self) -> bool:
        """``autocast_lm`` resolved for :attr:`torch_device` (emulated bf16 is far slower than fp32)."""
        from ..models.devices import use_bf16

        return use_bf16(self.autocast_lm, self.torch_device)

    @property
    def torch_device(self) -> str:
        from ..models.devices import resolve_device

        return str(resolve_device(self.device))

    @property
    def hook_name(self) -> str:
        return hf_hook_name(self.layer)

    def runner_config(self, model_name: str, output_path: str):
        from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig, TopKTrainingSAEConfig

        steps = self.training_tokens // self.batch_tokens
        sae_cfg = TopKTrainingSAEConfig(d_in=0, d_sae=self.d_sae, k=self.k,
                                        aux_loss_coefficient=self.aux_loss_coefficient,
                                        normalize_activations=self.normalize_activations)
        return sae_cfg, dict(
            model_name=model_name, model_class_name="AutoModelForCausalLM", hook_name=self.hook_name,
            dataset_path="probelab/wiki-intros", is_dataset_tokenized=False, streaming=False,
            context_size=self.context_size, seqpos_slice=(1, None), exclude_special_tokens=True,
            prepend_bos=True, training_tokens=self.training_tokens, train_batch_size_tokens=self.batch_tokens,
            store_batch_size_prompts=self.store_batch_prompts, n_batches_in_buffer=self.n_batches_in_buffer,
            lr=self.lr, lr_warm_up_steps=self.lr_warm_up_steps,
            lr_decay_steps=int(steps * self.lr_decay_fraction), dead_feature_window=self.dead_feature_window,
            feature_sampling_window=max(self.dead_feature_window, 200),
            n_batches_for_norm_estimate=self.n_batches_for_norm_estimate, autocast_lm=self.lm_autocast,
            device=self.torch_device, seed=self.seed, logger=LoggingConfig(log_to_wandb=False), output_path=output_path,
            checkpoint_path=None, n_checkpoints=0, **self.extra,
        ), LanguageModelSAERunnerConfig


def _model_folder(cfg: SAETrainConfig, model, tok, scratch: Path) -> str:
    """A folder sae-lens can load the model from (the embedded cache, a local folder, or a saved copy)."""
    from ..models import MODELS

    spec = MODELS.get(str(cfg.model))
    if spec is not None and spec.source == "embedded":
        from ..models.embedded import materialize_embedded

        return str(materialize_embedded(spec.name))
    if Path(str(cfg.model)).is_dir():
        return str(Path(str(cfg.model)).resolve())
    folder = scratch / "model"
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return str(folder)


def cache_activations(cfg: SAETrainConfig, model_folder: str, texts: list[str], d_in: int, out: Path) -> Path:
    """Phase 1: run the LM once over ``cfg.cache_tokens`` tokens and store the site's activations (sae-lens)."""
    from datasets import Dataset
    from sae_lens import CacheActivationsRunner, CacheActivationsRunnerConfig

    sliced = cfg.context_size - 1
    batch = cfg.store_batch_prompts * sliced
    per_buffer = max(batch, (cfg.cache_tokens // 8) // batch * batch)  # ~8 shards: a progress bar with steps
    cache_cfg = CacheActivationsRunnerConfig(
        dataset_path="probelab/wiki-intros", model_name=model_folder, model_class_name="AutoModelForCausalLM",
        model_batch_size=cfg.store_batch_prompts, hook_name=cfg.hook_name, d_in=d_in,
        training_tokens=cfg.cache_tokens, context_size=cfg.context_size, seqpos_slice=(1, None),
        buffer_size_gb=(per_buffer + 1) * d_in * 4 / 1e9, new_cached_activations_path=str(out),
        shuffle=True, seed=cfg.seed, dtype="float32", device=cfg.torch_device, autocast_lm=cfg.lm_autocast,
        streaming=False, prepend_bos=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CacheActivationsRunner(cache_cfg, override_dataset=Dataset.from_dict({"text": texts})).run()
    return out


def train_sae(config: SAETrainConfig | None = None, out: str | Path | None = None, progress: bool = True,
              model_and_tok=None, activations: str | Path | None = None, overwrite: bool = False):
    """Train, evaluate on held-out intros, save atomically to ``out``; return the loaded sae-lens SAE.

    Phase 1 caches ``cache_tokens`` LM activations (sae-lens ``CacheActivationsRunner``; or reuse
    ``activations``, a folder from an earlier run); phase 2 trains for ``training_tokens`` over that
    cache (several epochs) with ``LanguageModelSAETrainingRunner``. The LM forward pass costs ~3x an
    SAE step on this CPU, so reusing activations buys several times more SAE steps per minute.
    """
    import shutil
    import tempfile

    from datasets import Dataset
    from sae_lens import LanguageModelSAETrainingRunner
    from sae_lens.load_model import HookedProxyLM

    from ..models import load_model
    from .corpus import wiki_texts
    from .evaluate import sae_quality, site_states
    from .load import load_sae

    cfg = config or SAETrainConfig()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, tok = model_and_tok or load_model(cfg.model, device=cfg.torch_device, dtype=cfg.dtype)
    d_model, n_layers = int(model.config.hidden_size), int(model.config.num_hidden_layers)
    if not 1 <= cfg.layer <= n_layers:
        raise ProbelabError(f"layer {cfg.layer} is not a block output of this model (1..{n_layers})")
    train_texts, heldout = wiki_texts(cfg.n_heldout, seed=cfg.seed)
    out = Path(out) if out is not None else cache_dir() / "saes" / DEFAULT_NAME
    # scratch under $PROBELAB_CACHE/tmp with the pid in its name: removed below on errors, Ctrl-C and
    # SIGTERM, and by the next probelab run after a SIGKILL (probelab.paths.clean_scratch)
    scratch = Path(tempfile.mkdtemp(prefix=f"probelab-sae-{os.getpid()}-", dir=scratch_root()))
    started = time.time()
    try:
        if activations is None:
            acts = cache_activations(cfg, _model_folder(cfg, model, tok, scratch), train_texts, d_model,
                                     scratch / "activations")
        else:
            acts = Path(activations)
        cache_seconds = time.time() - started
        sae_cfg, kwargs, runner_cls = cfg.runner_config(str(cfg.model), "")
        sae_cfg.d_in = d_model
        kwargs.update(use_cached_activations=True, cached_activations_path=str(acts),
                      context_size=cfg.context_size - 1, seqpos_slice=(None,))
        proxy = HookedProxyLM(model, tok, hook_names=[cfg.hook_name])
        with atomic_dir(out, overwrite=overwrite, kind="sae") as tmp:
            kwargs["output_path"] = str(tmp)
            runner_cfg = runner_cls(sae=sae_cfg, **kwargs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                runner = LanguageModelSAETrainingRunner(  # the text is unused (cached activations) but required
                    runner_cfg, override_dataset=Dataset.from_dict({"text": train_texts[:64]}), override_model=proxy)
                runner.run()
            train_seconds = time.time() - started
            sae = load_sae(tmp)
            states = site_states(model, tok, heldout[:cfg.n_eval_texts], cfg.layer, progress=progress)
            quality = sae_quality(sae, states)
            meta = {"format": "probelab.sae", "model": str(cfg.model), "resid_index": cfg.layer,
                    "hook_name": cfg.hook_name, "tl_hook_name": tl_hook_name(cfg.layer),
                    "train_seconds": round(train_seconds, 1),
                    "cache_seconds": round(cache_seconds, 1), "heldout_quality": quality.as_dict(),
                    "config": asdict(cfg), "lm_bf16": cfg.lm_autocast,  # autocast_lm resolved on this machine
                    "torch_threads": torch.get_num_threads()}
            (tmp / PROBELAB_FILE).write_text(json.dumps(meta, indent=1))
        if cfg.keep_activations and activations is None:
            keep = out.parent / f".{out.name}.activations"
            shutil.rmtree(keep, ignore_errors=True)
            shutil.move(str(acts), keep)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return load_sae(out)


def read_meta(folder: str | Path) -> dict:
    """The ``probelab.json`` written next to an SAE trained by probelab ({} for other SAEs)."""
    f = Path(folder) / PROBELAB_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def default_sae_path() -> Path:
    return cache_dir() / "saes" / DEFAULT_NAME


def ensure_default_sae(progress: bool = True):
    """The default SAE for the embedded SmolLM2: loaded from the cache, trained there on first use."""
    from .load import load_sae

    path = default_sae_path()
    if not (path / "cfg.json").is_file():
        import sys

        print(f"probelab: training the default SAE into {path} (once; {TRAIN_TIME}); progress bars follow",
              file=sys.stderr, flush=True)
        train_sae(SAETrainConfig(), path, progress=progress)
    return load_sae(path)
