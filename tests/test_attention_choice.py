"""Attention implementation choice: the auto rule, switching an expanded model, training with either."""
from __future__ import annotations

import pytest
import torch

from probelab.errors import ProbelabError
from probelab.models.attention import (EAGER_BUDGET_BYTES, EAGER_MAX_TOKENS, SOFTMAX_BYTES, choose_attention, attention_implementation, attention_shape,
                                       auto_attention, switch_attention)
from probelab.models.control import STRATEGY_NAMES, expand_model
from probelab.models.tiny import tiny_llama, tiny_qwen2
from probelab.train.curves import read_jsonl
from test_training_run import run_inproc, run_subproc


def test_auto_is_eager_on_cpu_only_in_bf16_while_the_softmaxes_fit():
    bf16 = torch.bfloat16
    fits = EAGER_BUDGET_BYTES // (SOFTMAX_BYTES * 9 * 36 * 128 * 128)  # batches of 128 tokens that fit
    assert auto_attention("cpu", fits, 128, 9, 36, bf16) == "eager"
    assert auto_attention("cpu", fits + 1, 128, 9, 36, bf16) is None
    assert auto_attention(torch.device("cpu"), 4, 128, 9, 36, torch.float16) == "eager"
    assert auto_attention("cpu", 4, 128, 9, 36, torch.float32) is None  # fp32: SDPA is the faster one
    assert auto_attention("cpu", 4, 128, 9, 36, torch.float64) is None
    assert auto_attention("cpu", 16, 256, 9, 36, bf16) is None  # 2 GB of softmaxes: keep SDPA
    assert auto_attention("cpu", 1, EAGER_MAX_TOKENS, 9, 36, bf16) == "eager"
    assert auto_attention("cpu", 1, EAGER_MAX_TOKENS + 1, 9, 36, bf16) is None  # long sequences: SDPA is faster
    assert auto_attention("cuda", 1, 8, 1, 1, bf16) is None  # GPUs keep their fused kernels
    assert auto_attention("meta", 1, 8, 1, 1, bf16) is None


def test_choose_attention_resolves_auto_model_and_names():
    model = tiny_llama(num_layers=4, hidden=64, seed=0)  # 4 heads, 4 layers
    bf16 = torch.bfloat16
    assert choose_attention("auto", model, "cpu", 4, 128, bf16) == "eager"
    assert choose_attention("auto", model, "cpu", 4, 128, torch.float32) is None
    assert choose_attention(None, model, "cpu", 4, 128, bf16) is None
    assert choose_attention("model", model, "cpu", 4, 128, bf16) is None
    assert choose_attention("sdpa", model, "cpu", 4, 128, bf16) == "sdpa"
    # the layers an expansion will add count against the memory budget
    fits = EAGER_BUDGET_BYTES // (SOFTMAX_BYTES * 4 * 8 * 128 * 128)  # batches that fit with 4 + 4 layers
    assert choose_attention("auto", model, "cpu", fits, 128, bf16, extra_layers=4) == "eager"
    assert choose_attention("auto", model, "cpu", fits + 1, 128, bf16, extra_layers=4) is None


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_switching_an_expanded_model_reaches_every_copy(strategy):
    base = tiny_llama(num_layers=4, hidden=64, seed=0)
    ref = tiny_llama(num_layers=4, hidden=64, seed=0).eval()
    base.set_attn_implementation("sdpa")
    model = expand_model(base, num_expanded=2, strategy=strategy).eval()
    heads, n_attn = attention_shape(model)
    attn = [m for n, m in model.named_modules() if n.endswith("self_attn")]
    assert (heads, n_attn) == (4, len(attn)) and n_attn > 4  # the copies are counted
    ids = torch.randint(3, 250, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sdpa_logits = model(ids).logits
        with attention_implementation(model, "eager"):
            assert {m.config._attn_implementation for m in attn} == {"eager"}
            eager_logits = model(ids).logits
        assert {m.config._attn_implementation for m in attn} == {"sdpa"}
        torch.testing.assert_close(eager_logits, sdpa_logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(eager_logits, ref(ids).logits, rtol=1e-4, atol=1e-5)  # still the base at init


def test_unknown_attention_is_a_one_line_error():
    model = tiny_qwen2(num_layers=2, hidden=64, seed=0)
    before = model.config._attn_implementation
    with pytest.raises(ProbelabError) as e:
        switch_attention(model, "no_such_attention")
    assert "\n" not in str(e.value) and "no_such_attention" in str(e.value)
    assert model.config._attn_implementation == before


def test_training_with_eager_or_sdpa_gives_the_same_curve(tmp_path, capsys):
    runs = {}
    for name, attn in (("sdpa", "sdpa"), ("eager", "eager"), ("auto-fp32", "auto")):  # tiny-test trains in fp32
        run_inproc(tmp_path / name, "train.steps=3", "eval.at_start=false", f"train.attention={attn}")
        runs[name] = read_jsonl(tmp_path / name / "metrics.jsonl")
        assert f"{'sdpa' if attn == 'auto' else attn} attention" in capsys.readouterr().out  # auto: SDPA in fp32
    # bf16 autocast on CPU: auto picks eager (a subprocess: Accelerate's precision is fixed per process)
    proc = run_subproc(tmp_path / "auto-bf16", "train.steps=1", "eval.at_start=false", "train.precision=bf16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "eager attention" in proc.stdout
    for a, b in zip(runs["sdpa"], runs["eager"]):
        assert b["ce_loss"] == pytest.approx(a["ce_loss"], rel=1e-4)
        assert b["divergence_loss"] == pytest.approx(a["divergence_loss"], rel=1e-2, abs=1e-9)
    assert [r["ce_loss"] for r in runs["auto-fp32"]] == [r["ce_loss"] for r in runs["sdpa"]]
    with pytest.raises(ProbelabError, match="no_such_attention"):
        run_inproc(tmp_path / "bad", "train.steps=1", "train.attention=no_such_attention")
    assert not (tmp_path / "bad" / "final").exists()


def test_an_expanded_switched_base_reports_and_switches_its_attention():
    base = tiny_llama(num_layers=4, hidden=64, seed=0)
    switch_attention(base, "eager")  # what the training script does before expanding
    model = expand_model(base, num_expanded=2)
    attn = [m for n, m in model.named_modules() if n.endswith("self_attn")]
    assert model.config._attn_implementation == "eager"  # the wrapper says what its blocks run
    with attention_implementation(model, "sdpa"):
        assert {m.config._attn_implementation for m in attn} == {"sdpa"}
    assert {m.config._attn_implementation for m in attn} == {"eager"} and model.config._attn_implementation == "eager"


def test_training_attention_model_keeps_the_models_own(tmp_path, capsys):
    run_inproc(tmp_path / "own", "train.steps=1", "eval.at_start=false", "train.attention=model")
    assert "sdpa attention" in capsys.readouterr().out  # tiny-llama's own default
