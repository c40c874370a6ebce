"""``probelab lens``: JSON rows and tables on tiny models; SmolLM2 integration ("The capital of France is")."""
from __future__ import annotations

import json

import pytest
import torch

from probelab.cli import main
from probelab.models.control import ExpansionConfig, expand_model, save_control
from probelab.models.tiny import tiny_llama, tiny_tokenizer


def run_cli(args, capsys):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_lens_json_last_layer_top_is_greedy(capsys):
    code, out, err = run_cli(["lens", "king is to queen", "--model", "tiny-llama", "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    d = json.loads(out)
    model, tok = tiny_llama(), tiny_tokenizer()
    ids = tok("king is to queen", return_tensors="pt")["input_ids"]
    greedy = tok.decode([int(model(input_ids=ids).logits[0, -1].argmax())])
    last = [r for r in d["rows"] if r["stream"] == "resid"][-1]
    assert last["layer"] == 4 and last["top"][0]["token"] == greedy == d["greedy_next_token"]
    assert [r["layer"] for r in d["rows"]] == [0, 1, 2, 3, 4]


def test_lens_table_with_base_and_target(tmp_path, capsys):
    folder = save_control(expand_model(tiny_llama(), ExpansionConfig(num_expanded=2)).eval(), tmp_path / "ck",
                          tiny_tokenizer())
    code, out, err = run_cli(["lens", "king is to queen", "--model", folder, "--base", "tiny-llama", "--target", "q",
                              "--top-k", "2"], capsys)
    assert code == 0, err
    assert "target 'q'" in out and "expanded" in out and "pretrained" in out and "greedy next token" in out
    code, out, err = run_cli(["lens", "king is to queen", "--model", folder, "--base", "tiny-llama", "--json"], capsys)
    d = json.loads(out)
    assert set(d) == {"model", "base"}
    rows = {(r["stream"], r["layer"]): r for r in d["model"]["rows"]}
    for layer in (2, 4):  # at init every branch reads the same
        assert rows[("pretrained", layer)]["top"] == rows[("expanded", layer)]["top"] == rows[("merged", layer)]["top"]
        assert rows[("pretrained", layer)]["kl"] == rows[("expanded", layer)]["kl"]
    base_rows = {(r["stream"], r["layer"]): r for r in d["base"]["rows"]}
    assert set(base_rows) == {("resid", i) for i in range(5)}
    assert base_rows[("resid", 4)]["top"] == rows[("resid", 4)]["top"]  # identity at init


@pytest.mark.parametrize("args, message", [
    (["--target", "abc"], "is 3 tokens"),
    (["--position", "50"], "outside the text's"),
    (["--device", "warp9"], "unknown device"),
])
def test_lens_bad_input_is_one_line(capsys, args, message):
    code, out, err = run_cli(["lens", "king", "--model", "tiny-llama", *args], capsys)
    assert code == 1 and err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1


# ---- the embedded SmolLM2 ------------------------------------------------------------------------------
PROMPT = "The capital of France is"


def test_smollm2_capital_of_france(smollm2, smollm2_path, capsys):
    model, tok = smollm2
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        greedy = tok.decode([int(model(input_ids=ids).logits[0, -1].argmax())])
    code, out, err = run_cli(["lens", PROMPT, "--model", "smollm2-135m", "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    d = json.loads(out)
    rows = [r for r in d["rows"] if r["stream"] == "resid"]
    assert len(rows) == 31 and rows[-1]["layer"] == 30
    assert rows[-1]["top"][0]["token"] == greedy == d["greedy_next_token"]
    assert rows[-1]["kl"] == pytest.approx(0.0, abs=1e-5) and rows[0]["kl"] > 1.0  # embeddings are far from the output
    # " Paris" as the target: rank and probability read at every layer
    from probelab.analysis.lens import lens

    res = lens(model, tok, PROMPT, target=" Paris")
    assert res.streams["resid"].target_rank[-1, -1] <= 5


def test_smollm2_expanded_at_init_branches_identical():
    from probelab.analysis.lens import lens
    from probelab.models import load_model

    model, tok = load_model("smollm2-135m")
    control = expand_model(model, ExpansionConfig(num_expanded=6)).eval()
    res = lens(control, tok, PROMPT)
    assert res.meta["merged_layers"] == [5, 10, 15, 20, 25, 30]
    for metric in ("target_prob", "kl", "entropy", "top_prob"):
        a = res.streams["pretrained"].metric(metric)
        assert (a == res.streams["expanded"].metric(metric)).all() and (a == res.streams["merged"].metric(metric)).all()
    assert res.greedy_token == res.vocab[int(res.streams["merged"].top_ids[-1, -1, 0])]
