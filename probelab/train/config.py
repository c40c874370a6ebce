"""Training configuration: YAML/TOML files → typed dataclasses, with ``key.sub=value`` overrides.

Every field has a default and a comment saying why. Unknown keys, bad types and unknown
methods are one-line :class:`ProbelabError` messages.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ProbelabError


class ConfigError(ProbelabError):
    """A malformed or inconsistent training config."""


@dataclass
class RunCfg:
    out_dir: str = "runs/default"  # checkpoints, logs, curves and the final model go here
    seed: int = 0  # seeds the data order, the eval samples and torch
    resume: str = "auto"  # auto: continue from the last checkpoint if one exists; never; must
    kill_at_step: int = 0  # testing aid: SIGKILL the process right after this step (0 = off)


@dataclass
class ModelCfg:
    name: str = "smollm2-135m"  # a probelab model name, a local folder, or a hub id (network opt-in)
    allow_network: bool = False  # hub downloads only when asked


@dataclass
class MethodCfg:
    name: str = "control"  # full | partial | stack | hybrid | control
    every: int = 5  # partial: train 1 of every `every` blocks (the blocks Control LLM would expand)
    num_expanded: int = 6  # stack/hybrid/control: number of expanded blocks (DESIGN §4 layer choice)
    interpolation: str = "lerp"  # control: lerp | dlerp | dlerpin | plerp | moe
    divergence: str = "mse"  # control: mse | cosine | none
    alpha: Any = 1.0  # divergence weight: a number, 0 (off) or "dynamic" (= interpolation weight)


@dataclass
class DataCfg:
    source: str = "skill"  # skill (procedural task) | wiki (continual pretraining) | online (paper data)
    task: str = "add3"  # skill: a task in probelab.data.SKILL_TASKS; online: a key of ONLINE_SOURCES
    n_train: int = 4800  # distinct training examples (cycled in a seeded order when exhausted)
    max_len: int = 64  # tokens per example (arithmetic needs ~20; papers use 2048-8192)
    chat: bool = False  # wrap prompts in the tokenizer's chat template (instruct models, paper data)


@dataclass
class TrainCfg:
    steps: int = 300  # optimizer steps (equal for every method in a comparison)
    micro_batch: int = 16  # examples per forward pass per process
    grad_accum: int = 1  # micro-batches per optimizer step; global batch = micro_batch*grad_accum*processes
    lr: float = 1e-4  # peak AdamW learning rate
    min_lr_ratio: float = 0.1  # cosine decay ends at lr*min_lr_ratio
    warmup: int = 10  # linear warmup steps
    weight_decay: float = 0.0  # AdamW weight decay (0: pure continual SFT, like the paper's recipe)
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    precision: str = "bf16"  # bf16 (autocast) | no (fp32)
    checkpoint_every: int = 100  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # older checkpoints are deleted
    log_every: int = 1  # steps between metric rows
    loss_chunk: int = 0  # >0: CE from the final hidden states, this many tokens at a time (no full logits; not with FSDP / ZeRO-3)
    attention: str = "auto"  # auto: eager on CPU in bf16 while its softmaxes are small (faster backward), else the model's; or a name (sdpa, eager, ...) or "model"


@dataclass
class EvalCfg:
    every: int = 0  # steps between evaluations for the curves (0 = only at the end)
    at_start: bool = True  # evaluate the untrained model at step 0
    skill_n: int = 100  # held-out task problems for accuracy
    max_new_tokens: int = 8  # greedy tokens generated per problem
    wiki_n: int = 40  # held-out Wikipedia intros for perplexity
    wiki_max_len: int = 256  # tokens per intro
    mmlu_n: int = 100  # MMLU questions (seeded sample)
    mmlu_format: str = "cloze"  # cloze | letter (see probelab.evals.multiple_choice)
    mmlu_max_chars: int = 400  # skip long questions (CPU budget); report it
    wiki_mc_n: int = 100  # Wikipedia short-description multiple choice (cloze; chance 25%)
    bf16: bool = True  # autocast the evals (same setting before and after)
    batch_size: int = 16


@dataclass
class TrainConfig:
    run: RunCfg = field(default_factory=RunCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    method: MethodCfg = field(default_factory=MethodCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # Fields that may change when resuming (how long, how often, what to evaluate); everything
    # else defines the run and must match the checkpoint.
    RESUMABLE_CHANGES = ("run.out_dir", "run.resume", "run.kill_at_step", "train.steps",
                         "train.checkpoint_every", "train.keep_checkpoints", "train.log_every",
                         "train.loss_chunk", "train.attention", "eval.")  # same loss, computed differently

    def identity(self) -> dict:
        flat = _flatten(self.to_dict())
        return {k: v for k, v in flat.items() if not k.startswith(self.RESUMABLE_CHANGES)}

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _coerce(value: Any, default: Any, key: str) -> Any:
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        if isinstance(value, bool):
            return value
    elif isinstance(default, int) and not isinstance(default, bool):
        try:
            if isinstance(value, str) or float(value) == int(value):
                return int(float(value)) if not isinstance(value, bool) else _bad(key, value, "an integer")
        except (TypeError, ValueError):
            pass
        return _bad(key, value, "an integer")
    elif isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            return _bad(key, value, "a number")
    elif isinstance(default, str):
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted no / yes / off / on as a boolean
            return "yes" if value else "no"
        return str(value)
    else:  # Any-typed (alpha): numbers stay numbers, "dynamic" stays a string
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value
    return _bad(key, value, "true/false")


def _bad(key: str, value: Any, what: str):
    raise ConfigError(f"config key {key}: {value!r} is not {what}")


def from_dict(raw: dict) -> TrainConfig:
    cfg = TrainConfig()
    if not isinstance(raw, dict):
        raise ConfigError("a training config must be a mapping of sections (run, model, method, data, train, eval)")
    for section, values in raw.items():
        if section not in {f.name for f in dataclasses.fields(TrainConfig)}:
            raise ConfigError(f"unknown config section {section!r}; known: run, model, method, data, train, eval")
        sub = getattr(cfg, section)
        for key, value in (values or {}).items():
            if not hasattr(sub, key):
                known = ", ".join(f.name for f in dataclasses.fields(sub))
                raise ConfigError(f"unknown config key {section}.{key}; known in {section}: {known}")
            setattr(sub, key, _coerce(value, getattr(sub, key), f"{section}.{key}"))
    validate(cfg)
    return cfg


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``["train.steps=10", "method.name=full"]`` applied to a raw config mapping."""
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        raw.setdefault(section, {})
        raw[section][name] = yaml.safe_load(value) if value else value
    return raw


def read_raw(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot parse {path}: {str(e).splitlines()[0]}") from None
    return raw or {}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    raw = read_raw(path) if path else {}
    return from_dict(apply_overrides(raw, overrides or []))


def validate(cfg: TrainConfig) -> None:
    from .methods import METHODS

    m = cfg.method
    if m.name not in METHODS:
        raise ConfigError(f"unknown method {m.name!r}; known: {', '.join(METHODS)}")
    if m.every < 1 or m.num_expanded < 1:
        raise ConfigError("method.every and method.num_expanded must be >= 1")
    if not (m.alpha == "dynamic" or isinstance(m.alpha, (int, float))):
        raise ConfigError(f"method.alpha must be a number or 'dynamic', got {m.alpha!r}")
    if cfg.data.source not in {"skill", "wiki", "online"}:
        raise ConfigError(f"unknown data.source {cfg.data.source!r}; known: skill, wiki, online")
    if cfg.train.precision not in {"bf16", "no"}:
        raise ConfigError(f"train.precision must be bf16 or no, got {cfg.train.precision!r}")
    if cfg.run.resume not in {"auto", "never", "must"}:
        raise ConfigError(f"run.resume must be auto, never or must, got {cfg.run.resume!r}")
    for key in ("steps", "micro_batch", "grad_accum"):
        if getattr(cfg.train, key) < (0 if key == "steps" else 1):
            raise ConfigError(f"train.{key} must be positive")
    if cfg.train.loss_chunk < 0:
        raise ConfigError(f"train.loss_chunk must be >= 0 (0 = the model's own loss), got {cfg.train.loss_chunk}")
    if not cfg.train.attention.strip():
        raise ConfigError("train.attention must be auto, model or an attention implementation name (sdpa, eager, ...)")
    if cfg.eval.mmlu_format not in {"cloze", "letter"}:
        raise ConfigError(f"eval.mmlu_format must be cloze or letter, got {cfg.eval.mmlu_format!r}")
