"""``probelab expand``: writes a loadable Control LLM folder; bad input is one line, exit 1, nothing written."""
from __future__ import annotations

import json

import pytest
import torch

import probelab
from probelab.cli import main
from probelab.models.control import ControlLLMForCausalLM


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_expand_writes_a_loadable_folder(tmp_path, capsys):
    out = tmp_path / "lerp2"
    try:
        main(["expand", "tiny-qwen2", str(out), "--strategy", "hybrid", "--interpolation", "dlerpin",
              "--num-expanded", "4", "--divergence", "cosine", "--alpha", "dynamic"])
    except SystemExit as e:
        assert e.code in (0, None)
    printed = capsys.readouterr().out
    assert "Hybrid4" in printed and "wrote" in printed
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["expansion"]["strategy"] == "hybrid" and cfg["expansion"]["alpha"] == "dynamic"
    assert cfg["expansion"]["base_model"] == "tiny-qwen2"
    model, tok = probelab.load_model(out)
    base, _ = probelab.load_model("tiny-qwen2")
    assert isinstance(model, ControlLLMForCausalLM)
    ids = tok(["hello"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert (model(input_ids=ids).logits - base(input_ids=ids).logits).abs().max() < 1e-5


@pytest.mark.parametrize("args, message", [
    (["tiny-llama", "{out}", "-n", "9"], "cannot expand 9 layers: the model has only 4 layers"),
    (["tiny-llama", "{out}", "--interpolation", "slerp"], "unknown interpolator 'slerp'"),
    (["tiny-llama", "{out}", "--strategy", "wide"], "unknown strategy 'wide'"),
    (["tiny-llama", "{out}", "--alpha", "much"], "alpha must be a number or 'dynamic'"),
    (["{missing}", "{out}"], "does not exist"),
    (["{notdecoder}", "{out}"], "cannot load model"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    notdecoder = tmp_path / "t5"
    if "{notdecoder}" in args:
        from transformers import T5Config, T5ForConditionalGeneration

        T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                                            num_heads=2)).save_pretrained(notdecoder)
    args = ["expand"] + [a.format(out=out, missing=tmp_path / "missing", notdecoder=notdecoder) for a in args]
    code, _, err = run_cli(args, capsys)
    assert code == 1
    assert err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
