"""``auto`` precision: bf16 only where it is native (emulated bf16 on an AVX2 CPU is ~100x slower than fp32)."""
from __future__ import annotations

import pytest

from probelab.errors import ProbelabError
from probelab.models import devices


@pytest.fixture
def cpu_flags(monkeypatch):
    def set_flags(flags):
        monkeypatch.setattr(devices, "_cpu_flags", lambda: set(flags))
    return set_flags


def test_native_bf16_reads_the_cpu_flags(cpu_flags):
    cpu_flags({"avx2", "fma"})
    assert devices.native_bf16("cpu") is False
    cpu_flags({"avx2", "avx512f", "avx512_bf16"})
    assert devices.native_bf16("cpu") is True
    cpu_flags({"avx2", "amx_bf16", "amx_tile"})
    assert devices.native_bf16("cpu") is True


def test_use_bf16_auto_follows_the_hardware(cpu_flags):
    cpu_flags({"avx2"})
    assert devices.use_bf16("auto", "cpu") is False
    assert devices.use_bf16(True, "cpu") is True and devices.use_bf16("false", "cpu") is False
    cpu_flags({"avx512_bf16"})
    assert devices.use_bf16("auto", "cpu") is True
    with pytest.raises(ProbelabError, match="true, false or auto"):
        devices.use_bf16("sometimes", "cpu")


def test_resolve_precision(cpu_flags, capsys):
    from probelab.train.run import resolve_precision

    cpu_flags({"avx2"})
    assert resolve_precision("auto") == "no" and resolve_precision("no") == "no"
    assert capsys.readouterr().err == ""
    assert resolve_precision("bf16") == "bf16"  # an explicit choice is kept, with a note
    assert "emulated" in capsys.readouterr().err
    cpu_flags({"amx_bf16"})
    assert resolve_precision("auto") == "bf16"
    assert capsys.readouterr().err == ""


def test_config_accepts_auto_and_refuses_nonsense():
    from probelab.train.config import load_config

    cfg = load_config("cpu-smoke", [])
    assert cfg.train.precision == "auto" and cfg.eval.bf16 == "auto"
    assert devices.use_bf16(load_config("cpu-smoke", ["eval.bf16=false"]).eval.bf16) is False
    with pytest.raises(ProbelabError, match="eval.bf16 must be true, false or auto"):
        load_config("cpu-smoke", ["eval.bf16=maybe"])
    with pytest.raises(ProbelabError, match="train.precision must be auto, bf16 or no"):
        load_config("cpu-smoke", ["train.precision=fp8"])
    with pytest.raises(ProbelabError, match="teacher.autocast_bf16 must be true, false or auto"):
        load_config("cocomix_cpu", ["teacher.autocast_bf16=maybe"])


def test_eval_suite_runs_fp32_where_bf16_is_emulated(cpu_flags, monkeypatch):
    """``eval.bf16: auto`` on a CPU without native bf16: the evaluations run without autocast."""
    import torch

    from probelab.evals import suite as suite_mod
    from probelab.models.tiny import tiny_llama
    from probelab.train.config import EvalCfg

    cpu_flags({"avx2"})
    seen = []
    monkeypatch.setattr(suite_mod, "perplexity", lambda m, t, texts, n, b, bf16: seen.append(bf16) or
                        type("R", (), {"value": 1.0})())
    cfg = EvalCfg(skill_n=0, wiki_n=1, mmlu_n=0, wiki_mc_n=0, bf16="auto")
    suite_mod.EvalSuite([], ["a text"], [], [], cfg).run(tiny_llama(), None)
    cpu_flags({"avx512_bf16"})
    suite_mod.EvalSuite([], ["a text"], [], [], cfg).run(tiny_llama(), None)
    assert seen == [False, True] and torch.get_default_dtype() == torch.float32


def test_config_and_use_bf16_read_the_same_words(cpu_flags):
    """One list of spellings: what a config accepts, use_bf16 understands the same way."""
    from probelab.flags import BF16_WORDS, bf16_flag
    from probelab.train.config import _check_bf16_flag

    cpu_flags({"avx2"})
    for word, meaning in BF16_WORDS.items():
        if word:
            _check_bf16_flag("eval.bf16", word.upper())
        assert devices.use_bf16(word, "cpu") is (False if meaning is None else meaning)
        assert bf16_flag(f" {word.upper()} ") is meaning
    with pytest.raises(ProbelabError):
        _check_bf16_flag("eval.bf16", "sometimes")
