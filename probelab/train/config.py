"""Training configuration for both recipes: YAML/TOML files → typed dataclasses, ``section.key=value`` overrides.

One system serves the two training loops: continual SFT (``run.recipe: csft``, the default;
:class:`TrainConfig`, run by :mod:`probelab.train.csft`) and CoCoMix pretraining
(``run.recipe: cocomix``; :class:`CoCoMixTrainConfig`, run by :mod:`probelab.train.cocomix`).
Both share the ``run`` section (where, which seed, resume rules) and the optimiser / schedule /
checkpoint part of ``train`` (:class:`OptimCfg`); the rest is per recipe. Every field has a
default and a comment saying why. Unknown keys, bad types, out-of-range numbers and unknown
methods are one-line :class:`ProbelabError` messages naming the key, raised before any model loads.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ProbelabError


class ConfigError(ProbelabError):
    """A malformed or inconsistent training config."""


OFFICIAL_WEIGHT_DECAY = 1e-2  # AdamW weight decay of the Control LLM authors' code (method.preset=official)


RECIPES = ("csft", "cocomix")


# ---------------------------------------------------------------------------------------------- shared
@dataclass
class RunCfg:
    recipe: str = "csft"  # csft: continual SFT (probelab.train.csft) | cocomix: CoCoMix / NTP pretraining (probelab.train.cocomix)
    out_dir: str = "runs/default"  # checkpoints, logs, curves and the final model go here ("{method}" = method.name)
    seed: int = 0  # seeds the data order, the eval samples, model init and torch
    resume: str = "auto"  # auto: continue this folder's run from its last checkpoint; never: refuse a folder holding a run (--start-over moves it aside); must: refuse without a checkpoint
    stop_after: int = 0  # checkpoint and exit after this many steps of this invocation (time-boxed jobs; rerun to continue; 0 = off)
    kill_at_step: int = 0  # testing aid: SIGKILL the process right after this step (0 = off)
    progress: bool = True  # tqdm progress bar on the main process


@dataclass
class OptimCfg:
    """What both loops share: AdamW, the LR schedule (probelab.train.schedule), checkpoints, logs."""
    steps: int = 300  # optimizer steps (equal for every method in a comparison)
    micro_batch: int = 16  # examples (CoCoMix: blocks) per forward pass per process
    grad_accum: int = 1  # micro-batches per optimizer step; global batch = micro_batch*grad_accum*processes
    lr: float = 1e-4  # peak AdamW learning rate
    min_lr_ratio: float = 0.1  # cosine decay ends at lr*min_lr_ratio
    warmup: int = 10  # linear warmup steps (lr/warmup, 2*lr/warmup, ..., lr)
    weight_decay: float = 0.0  # AdamW weight decay (0: probelab's choice; the official Control LLM code uses 1e-2, and so does method.preset=official unless set)
    betas: list = field(default_factory=lambda: [0.9, 0.95])  # AdamW betas (both papers)
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    precision: str = "auto"  # bf16 (autocast, fp32 master weights) | no (fp32) | auto (bf16 where it is native: a GPU, a CPU with AVX512-BF16/AMX; else fp32)
    checkpoint_every: int = 100  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # this run's older checkpoints are deleted (0 = keep all)
    log_every: int = 1  # steps between metric rows


class _Recipe:
    """Methods shared by the recipe configs (dataclasses with a ``run`` and a ``train`` section)."""

    # Fields that may change when resuming (how long, how often, what to evaluate); everything
    # else defines the run and must match the checkpoint.
    RESUMABLE_CHANGES = ("run.out_dir", "run.resume", "run.kill_at_step", "run.stop_after", "run.progress",
                         "train.steps", "train.checkpoint_every", "train.keep_checkpoints", "train.log_every",
                         "train.loss_chunk", "train.attention", "eval.")  # same loss, computed differently

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        flat = _flatten(self.to_dict())
        return {k: v for k, v in flat.items() if not k.startswith(self.RESUMABLE_CHANGES)}

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]

    def identity_diff(self, saved: dict) -> list[str]:
        """Keys whose value differs from a checkpoint's ``identity``. A key the checkpoint does not
        know (added to probelab after it was written) counts only when set away from its default."""
        now, defaults = self.identity(), type(self)().identity()
        return sorted(k for k in set(now) | set(saved)
                      if (now.get(k) != saved[k] if k in saved else now.get(k) != defaults.get(k)))


# ---------------------------------------------------------------------------------------------- csft
@dataclass
class ModelCfg:
    name: str = "smollm2-135m"  # a probelab model name, a local folder, or a hub id (network opt-in)
    allow_network: bool = False  # hub downloads only when asked


@dataclass
class MethodCfg:
    name: str = "control"  # full | partial | stack | hybrid | control
    every: int = 5  # partial: train 1 of every `every` blocks (the blocks Control LLM would expand)
    num_expanded: int = 6  # stack/hybrid/control: number of expanded blocks (the paper's layer rule)
    interpolation: str = "lerp"  # control: lerp | dlerp | dlerpin | plerp | moe
    divergence: str = "mse"  # control: mse | cosine | none
    alpha: Any = 1.0  # divergence weight: a number, 0 (off) or "dynamic" (= interpolation weight)
    preset: str = "probelab"  # control: probelab | official (the Control LLM authors' defaults); fills each knob below left unset
    freeze_interpolator: Any = None  # control: keep the interpolation factor fixed (null: from the preset)
    gate_init: str = ""  # control: zero | random gate weights ("": from the preset)
    moe_divergence: str = ""  # control, moe: all | routed tokens in the divergence ("": from the preset)
    detach_alpha: Any = None  # control, alpha=dynamic: a constant coefficient (true) or with gradient (false); null: from the preset


@dataclass
class DataCfg:
    source: str = "skill"  # skill (procedural task) | wiki (continual pretraining) | online (paper data)
    task: str = "add3"  # skill: a task in probelab.data.SKILL_TASKS; online: a key of ONLINE_SOURCES
    n_train: int = 4800  # distinct training examples (cycled in a seeded order when exhausted)
    max_len: int = 64  # tokens per example (arithmetic needs ~20; papers use 2048-8192)
    chat: bool = False  # wrap prompts in the tokenizer's chat template (instruct models, paper data)


@dataclass
class TrainCfg(OptimCfg):
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
    bf16: Any = "auto"  # autocast the evals in bf16: true | false | auto (where bf16 is native: a GPU, a CPU with AVX512-BF16/AMX)
    batch_size: int = 16


@dataclass
class TrainConfig(_Recipe):
    """Continual SFT (``run.recipe: csft``)."""
    run: RunCfg = field(default_factory=RunCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    method: MethodCfg = field(default_factory=MethodCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)


CSFTConfig = TrainConfig


# ---------------------------------------------------------------------------------------------- cocomix
@dataclass
class CoCoMixMethodCfg:
    name: str = "cocomix"  # cocomix (concept prediction + mixing) | ntp (next-token baseline, widened to CoCoMix's active parameters)


@dataclass
class CorpusCfg:
    source: str = "wiki"  # wiki: offline Wikipedia intros (probelab.data) | openwebtext: datasets, network
    tokenizer: str = "smollm2-135m"  # the student shares the teacher's tokenizer (labels are per token)
    block_size: int = 128  # context length of a training block
    train_tokens: int = 102400  # tokens in the (fixed, labelled) training set; epochs repeat it
    val_tokens: int = 16384  # held-out tokens for validation perplexity (from held-out articles)
    val_texts: int = 500  # articles held out for validation (wiki: the default SAE's held-out 500)
    vocab_size: int = 0  # 0: the tokenizer's vocabulary; N: the N-1 most frequent training ids + one "other" id, for both students (the teacher labels the original ids)
    split_seed: int = 0  # which articles are held out / streamed first (fixed across seeds, so runs with other seeds reuse the cached teacher labels)


@dataclass
class TeacherCfg:
    model: str = "smollm2-135m"  # frozen LM whose SAE concepts are the labels
    sae: str = "default"  # probelab.sae.load_sae source: default | folder | release:sae_id
    variant: str = "official"  # attribution variant (official: post-activation x grad of sequence loss)
    k_attr: int = 4  # labels per token (paper: 4)
    select: str = "attribution"  # which latents become labels: attribution (top k_attr by score, the paper) | activation (top k_attr by SAE activation, the paper's Fig. 6a ablation)
    labels: str = "cached"  # cached (computed once, reused across runs) | on_the_fly
    label_batch_size: int = 8  # teacher batch when labelling
    autocast_bf16: Any = "auto"  # teacher in bf16 autocast while labelling: true | false | auto (where bf16 is native)
    cache_dir: Any = None  # label cache folder (null: <probelab cache>/cocomix_labels/<hash>)
    n_concepts: Any = None  # C (the SAE width); null: read from the SAE. Setting it lets the NTP baseline be sized without loading the SAE


@dataclass
class StudentCfg:  # a LlamaConfig; vocab and special ids come from the tokenizer
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    intermediate_size: int = 512
    tie_word_embeddings: bool = True
    insert_layer: int = 2  # concepts are predicted after this many blocks (official configs: 3 of 8 at 69M, 5 of 24 at 386M/1B)
    topk: int = 32  # concepts kept before compression (paper: 32)
    lam: float = 0.1  # concept-loss weight (paper: 0.1)


@dataclass
class CoCoMixOptimCfg(OptimCfg):
    steps: int = 300
    micro_batch: int = 16  # blocks per forward per process
    lr: float = 1.5e-3  # peak (paper: 6e-4 at 69M; small CPU models take more)
    warmup: int = 20
    weight_decay: float = 0.1  # paper; not applied to biases, norms, pre_bias
    precision: str = "auto"


@dataclass
class CoCoMixEvalCfg:
    every: int = 25  # steps between validation-perplexity measurements (and always at the end)
    at_start: bool = True  # validation perplexity of the untrained student at step 0
    batch_size: int = 32  # validation blocks per forward


@dataclass
class CoCoMixTrainConfig(_Recipe):
    """CoCoMix or its NTP baseline (``run.recipe: cocomix``)."""
    run: RunCfg = field(default_factory=lambda: RunCfg(recipe="cocomix", out_dir="runs/cocomix/{method}"))
    method: CoCoMixMethodCfg = field(default_factory=CoCoMixMethodCfg)
    data: CorpusCfg = field(default_factory=CorpusCfg)
    teacher: TeacherCfg = field(default_factory=TeacherCfg)
    student: StudentCfg = field(default_factory=StudentCfg)
    train: CoCoMixOptimCfg = field(default_factory=CoCoMixOptimCfg)
    eval: CoCoMixEvalCfg = field(default_factory=CoCoMixEvalCfg)


CONFIG_CLASSES = {"csft": TrainConfig, "cocomix": CoCoMixTrainConfig}


# ---------------------------------------------------------------------------------------------- reading
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
        if isinstance(value, bool):
            return _bad(key, value, "an integer")
        try:
            number = float(value)
            if math.isfinite(number) and number == int(number):
                return int(number)
        except (TypeError, ValueError, OverflowError):
            pass
        return _bad(key, value, "an integer")
    elif isinstance(default, float):
        if isinstance(value, bool):
            return _bad(key, value, "a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            return _bad(key, value, "a number")
    elif isinstance(default, str):
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted no / yes / off / on as a boolean
            return "yes" if value else "no"
        if isinstance(value, (dict, list)):
            return _bad(key, value, "a string")
        return str(value)
    elif isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            return _bad(key, value, "a list")
        return list(value)
    else:  # Any-typed (alpha, n_concepts, cache_dir): numbers stay numbers, "dynamic" stays a string
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value
    return _bad(key, value, "true/false")


def _bad(key: str, value: Any, what: str):
    raise ConfigError(f"config key {key}: {value!r} is not {what}")


def recipe_of(raw: dict) -> str:
    run = raw.get("run") if isinstance(raw, dict) else None
    recipe = (run or {}).get("recipe", "csft") if isinstance(run, dict) else "csft"
    if recipe not in CONFIG_CLASSES:
        raise ConfigError(f"unknown run.recipe {recipe!r}; known: {', '.join(RECIPES)}")
    return recipe


def from_dict(raw: dict) -> TrainConfig | CoCoMixTrainConfig:
    """A typed, validated config for the recipe that ``raw["run"]["recipe"]`` names (default csft)."""
    if not isinstance(raw, dict):
        raise ConfigError("a training config must be a mapping of sections (run, model, method, data, train, eval)")
    cls = CONFIG_CLASSES[recipe_of(raw)]
    cfg = cls()
    sections = [f.name for f in dataclasses.fields(cls)]
    for section, values in raw.items():
        if section not in sections:
            raise ConfigError(f"unknown config section {section!r} for run.recipe={cfg.run.recipe}; "
                              f"known: {', '.join(sections)}")
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"config section {section} must be a mapping of keys, got {values!r}")
        sub = getattr(cfg, section)
        for key, value in (values or {}).items():
            if not hasattr(sub, key):
                known = ", ".join(f.name for f in dataclasses.fields(sub))
                raise ConfigError(f"unknown config key {section}.{key}; known in {section}: {known}")
            setattr(sub, key, _coerce(value, getattr(sub, key), f"{section}.{key}"))
    cfg.run.out_dir = cfg.run.out_dir.replace("{method}", cfg.method.name)
    if getattr(cfg.method, "preset", None) == "official" and "weight_decay" not in (raw.get("train") or {}):
        cfg.train.weight_decay = OFFICIAL_WEIGHT_DECAY
    validate(cfg)
    return cfg


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``["train.steps=10", "method.name=full"]`` applied to a raw config mapping."""
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        if not isinstance(raw.get(section, {}), dict):
            raise ConfigError(f"override {item!r}: config section {section} is not a mapping")
        raw.setdefault(section, {})
        raw[section][name] = yaml.safe_load(value) if value else value
    return raw


def find_config(name_or_path: str | Path) -> Path:
    """A config file: a path as given, or the name of a packaged config (``tiny-test``); a folder
    or a missing file is a one-line error."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        raise ConfigError(f"config {path} is a directory, not a config file (give a .yaml or .toml file)")
    if path.is_file():
        return path
    from ..resources import training_config

    try:
        return training_config(name_or_path)
    except ProbelabError as e:
        raise ConfigError(f"config file {path} does not exist ({str(e).split('; ', 1)[-1]})") from None


def read_raw(path: str | Path) -> dict:
    path = find_config(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror if isinstance(e, OSError) else e.reason}") from None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot parse {path}: {str(e).splitlines()[0]}") from None
    return raw or {}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None):
    """The config of a file (or packaged config name) plus ``section.key=value`` overrides."""
    raw = read_raw(path) if path else {}
    return from_dict(apply_overrides(raw, overrides or []))


# ---------------------------------------------------------------------------------------------- validation
def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _finite(section: str, obj, key: str, low: float, high: float = math.inf, low_open: bool = False) -> None:
    v = getattr(obj, key)
    name = f"{section}.{key}"
    _check(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
           f"{name} must be a finite number, got {v!r}")
    bad = v <= low if low_open else v < low
    if bad or v > high:
        left = "(" if low_open else "["
        right = "]" if math.isfinite(high) else ")"
        raise ConfigError(f"{name} must be in {left}{low:g}, {high:g}{right}, got {v!r}")


def _check_bf16_flag(key: str, value) -> None:
    from ..flags import BF16_WORDS

    ok = isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in BF16_WORDS.keys() - {""})
    _check(ok, f"{key} must be true, false or auto, got {value!r}")


def validate_run(run: RunCfg) -> None:
    _check(run.resume in {"auto", "never", "must"}, f"run.resume must be auto, never or must, got {run.resume!r}")
    _check(0 <= run.seed < 2 ** 63, f"run.seed must be in [0, 2^63), got {run.seed}")
    _check(bool(str(run.out_dir).strip()), "run.out_dir must not be empty")
    for key in ("stop_after", "kill_at_step"):
        _check(getattr(run, key) >= 0, f"run.{key} must be >= 0 (0 = off), got {getattr(run, key)}")


def validate_optim(t: OptimCfg, min_steps: int = 0) -> None:
    """Every optimiser / schedule number: finite and in range, named in the message."""
    _check(t.steps >= min_steps, f"train.steps must be >= {min_steps}, got {t.steps}")
    for key in ("micro_batch", "grad_accum", "log_every"):
        _check(getattr(t, key) >= 1, f"train.{key} must be >= 1, got {getattr(t, key)}")
    for key in ("warmup", "checkpoint_every", "keep_checkpoints"):
        _check(getattr(t, key) >= 0, f"train.{key} must be >= 0, got {getattr(t, key)}")
    _finite("train", t, "lr", 0.0, 1.0, low_open=True)  # AdamW never trains above 1 (and torch overflows near 3e37)
    _finite("train", t, "min_lr_ratio", 0.0, 1.0)
    _finite("train", t, "weight_decay", 0.0)
    _finite("train", t, "grad_clip", 0.0)
    betas = t.betas
    _check(len(betas) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b)
                                   and 0.0 <= b < 1.0 for b in betas),
           f"train.betas must be two numbers in [0, 1), got {betas!r}")
    _check(t.precision in {"auto", "bf16", "no"}, f"train.precision must be auto, bf16 or no, got {t.precision!r}")


def validate(cfg) -> None:
    validate_run(cfg.run)
    if isinstance(cfg, CoCoMixTrainConfig):
        return _validate_cocomix(cfg)
    from .methods import METHODS

    m = cfg.method
    if m.name not in METHODS:
        raise ConfigError(f"unknown method {m.name!r}; known: {', '.join(METHODS)}")
    if m.every < 1 or m.num_expanded < 1:
        raise ConfigError("method.every and method.num_expanded must be >= 1")
    if not (m.alpha == "dynamic" or isinstance(m.alpha, (int, float))):
        raise ConfigError(f"method.alpha must be a number or 'dynamic', got {m.alpha!r}")
    if isinstance(m.alpha, (int, float)) and not (math.isfinite(m.alpha) and m.alpha >= 0):
        raise ConfigError(f"method.alpha must be a finite number >= 0 or 'dynamic', got {m.alpha!r}")
    from ..models.control.config import GATE_INIT_NAMES, MOE_DIVERGENCE_NAMES, PRESET_NAMES

    if m.preset not in PRESET_NAMES:
        raise ConfigError(f"unknown method.preset {m.preset!r}; known: {', '.join(PRESET_NAMES)}")
    for key, allowed in (("gate_init", GATE_INIT_NAMES), ("moe_divergence", MOE_DIVERGENCE_NAMES)):
        if getattr(m, key) and getattr(m, key) not in allowed:
            raise ConfigError(f"unknown method.{key} {getattr(m, key)!r}; known: {', '.join(allowed)} (or empty: from the preset)")
    for key in ("freeze_interpolator", "detach_alpha"):
        if getattr(m, key) is not None and not isinstance(getattr(m, key), bool):
            raise ConfigError(f"method.{key} must be true, false or null (from the preset), got {getattr(m, key)!r}")
    if cfg.data.source not in {"skill", "wiki", "online"}:
        raise ConfigError(f"unknown data.source {cfg.data.source!r}; known: skill, wiki, online")
    for key in ("n_train", "max_len"):
        _check(getattr(cfg.data, key) >= 1, f"data.{key} must be >= 1, got {getattr(cfg.data, key)}")
    validate_optim(cfg.train)
    if cfg.train.loss_chunk < 0:
        raise ConfigError(f"train.loss_chunk must be >= 0 (0 = the model's own loss), got {cfg.train.loss_chunk}")
    if not cfg.train.attention.strip():
        raise ConfigError("train.attention must be auto, model or an attention implementation name (sdpa, eager, ...)")
    e = cfg.eval
    if e.mmlu_format not in {"cloze", "letter"}:
        raise ConfigError(f"eval.mmlu_format must be cloze or letter, got {e.mmlu_format!r}")
    for key in ("every", "skill_n", "max_new_tokens", "wiki_n", "wiki_max_len", "mmlu_n", "mmlu_max_chars", "wiki_mc_n"):
        _check(getattr(e, key) >= 0, f"eval.{key} must be >= 0, got {getattr(e, key)}")
    _check(e.batch_size >= 1, f"eval.batch_size must be >= 1, got {e.batch_size}")
    _check_bf16_flag("eval.bf16", e.bf16)


def _validate_cocomix(cfg: CoCoMixTrainConfig) -> None:
    _check(cfg.method.name in {"cocomix", "ntp"}, f"unknown method {cfg.method.name!r}; known: cocomix, ntp")
    d, t, s = cfg.data, cfg.teacher, cfg.student
    _check(d.source in {"wiki", "openwebtext"}, f"unknown data.source {d.source!r}; known: wiki, openwebtext")
    for key in ("block_size", "train_tokens", "val_tokens", "val_texts"):
        _check(getattr(d, key) >= 1, f"data.{key} must be >= 1, got {getattr(d, key)}")
    _check(d.split_seed >= 0, f"data.split_seed must be >= 0, got {d.split_seed}")
    _check(t.labels in {"cached", "on_the_fly"}, f"teacher.labels must be cached or on_the_fly, got {t.labels!r}")
    _check(t.select in {"attribution", "activation"},
           f"teacher.select must be attribution or activation, got {t.select!r}")
    _check_bf16_flag("teacher.autocast_bf16", t.autocast_bf16)
    _check(d.vocab_size == 0 or d.vocab_size >= 2, f"data.vocab_size must be 0 (the tokenizer's) or >= 2, got {d.vocab_size}")
    _check(d.vocab_size == 0 or d.source == "wiki", "data.vocab_size needs a fixed corpus (data.source=wiki)")
    for key in ("k_attr", "label_batch_size"):
        _check(getattr(t, key) >= 1, f"teacher.{key} must be >= 1, got {getattr(t, key)}")
    _check(t.n_concepts is None or (isinstance(t.n_concepts, (int, float)) and not isinstance(t.n_concepts, bool)
                                    and t.n_concepts >= 1 and float(t.n_concepts).is_integer()),
           f"teacher.n_concepts must be null (read from the SAE) or an integer >= 1, got {t.n_concepts!r}")
    if t.n_concepts is not None:
        t.n_concepts = int(t.n_concepts)
    _check(t.cache_dir is None or isinstance(t.cache_dir, str), f"teacher.cache_dir must be null or a folder, got {t.cache_dir!r}")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
                "topk"):
        _check(getattr(s, key) >= 1, f"student.{key} must be >= 1, got {getattr(s, key)}")
    _check(1 <= s.insert_layer <= s.num_hidden_layers,
           f"student.insert_layer must be in [1, {s.num_hidden_layers}] (student.num_hidden_layers), got {s.insert_layer}")
    _finite("student", s, "lam", 0.0)
    validate_optim(cfg.train, min_steps=1)
    e = cfg.eval
    _check(e.every >= 0, f"eval.every must be >= 0, got {e.every}")
    _check(e.batch_size >= 1, f"eval.batch_size must be >= 1, got {e.batch_size}")
