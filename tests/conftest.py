"""Shared fixtures: tiny random models for unit tests, the embedded SmolLM2 for integration tests."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny():
    """(model, tokenizer): a random 4-layer Llama, d64, with the byte-level tokenizer."""
    from probelab.models.tiny import tiny_llama, tiny_tokenizer

    return tiny_llama(), tiny_tokenizer()


@pytest.fixture
def tiny_qwen():
    from probelab.models.tiny import tiny_qwen2, tiny_tokenizer

    return tiny_qwen2(), tiny_tokenizer()


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct (materialized once in the cache)."""
    from probelab.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_path():
    """Path of the cached safetensors folder of the embedded model."""
    from probelab.models.embedded import materialize_embedded

    return materialize_embedded()


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Training scripts run in-process build an ``Accelerator``; its state is a process-wide singleton
    that refuses a different mixed-precision setting later, so each test starts from a clean one."""
    yield
    import sys

    if "accelerate.state" in sys.modules:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
