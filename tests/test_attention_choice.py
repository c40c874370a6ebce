"""Attention implementation choice: the auto rule, switching an expanded model, training with either."""
from __future__ import annotations

import pytest
import torch

from probelab.errors import ProbelabError
from probelab.models.attention import (EAGER_BUDGET_BYTES, EAGER_MAX_TOKENS, SOFTMAX_BYTES, attention_implementation, attention_shape,
                                       auto_attention, switch_attention)
from probelab.models.control import STRATEGY_NAMES, expand_model
from probelab.models.tiny import tiny_llama, tiny_qwen2
from probelab.train.curves import read_jsonl
from test_training_run import run_inproc


def test_auto_is_eager_on_cpu_only_while_the_softmaxes_fit():
    fits = EAGER_BUDGET_BYTES // (SOFTMAX_BYTES * 9 * 36 * 128 * 128)  # batches of 128 tokens that fit
    assert auto_attention("cpu", fits, 128, 9, 36) == "eager"
    assert auto_attention("cpu", fits + 1, 128, 9, 36) is None
    assert auto_attention(torch.device("cpu"), 4, 128, 9, 36) == "eager"
    assert auto_attention("cpu", 16, 256, 9, 36) is None  # 2 GB of softmaxes: keep SDPA
    assert auto_attention("cpu", 1, EAGER_MAX_TOKENS, 9, 36) == "eager"
    assert auto_attention("cpu", 1, EAGER_MAX_TOKENS + 1, 9, 36) is None  # long sequences: SDPA is faster
    assert auto_attention("cuda", 1, 8, 1, 1) is None  # GPUs keep their fused kernels
    assert auto_attention("meta", 1, 8, 1, 1) is None


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
    for attn in ("sdpa", "eager", "auto"):
        run_inproc(tmp_path / attn, "train.steps=3", "eval.at_start=false", f"train.attention={attn}")
        runs[attn] = read_jsonl(tmp_path / attn / "metrics.jsonl")
        assert f"{'eager' if attn == 'auto' else attn} attention" in capsys.readouterr().out
    for a, b in zip(runs["sdpa"], runs["eager"]):
        assert b["ce_loss"] == pytest.approx(a["ce_loss"], rel=1e-4)
        assert b["divergence_loss"] == pytest.approx(a["divergence_loss"], rel=1e-2, abs=1e-9)
    assert [r["ce_loss"] for r in runs["auto"]] == [r["ce_loss"] for r in runs["eager"]]  # auto = eager on CPU
    with pytest.raises(ProbelabError, match="no_such_attention"):
        run_inproc(tmp_path / "bad", "train.steps=1", "train.attention=no_such_attention")
    assert not (tmp_path / "bad" / "final").exists()
