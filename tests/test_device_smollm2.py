"""Integration: bf16 capture from the CLI on the embedded SmolLM2, and the mean rule's attention sink.

Tolerances for bf16 vs float32 weights (SmolLM2, analogy probes, last token, every layer): each
state's relative error ||bf16 - fp32|| / ||fp32|| is below 0.1 and its cosine with the fp32 state
above 0.99; the median relative error over all states is below 0.03.
"""
import pytest
import torch

import probelab
from probelab.capture import Captures
from probelab.cli import main

pytestmark = pytest.mark.integration

REL_MAX, REL_MEDIAN, COS_MIN = 0.1, 0.03, 0.99


def run_cli(args, capsys):
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_capture_bf16_matches_float32(tmp_path, capsys, smollm2_path):
    # 24 of the analogy probes: bf16 matmuls are emulated (slow) on CPUs without AVX512-BF16/AMX
    texts = probelab.load_probes("analogies").texts[:24]
    common = ["capture", "--model", "smollm2-135m", "--device", "cpu", *[a for t in texts for a in ("--text", t)]]
    code, _, err = run_cli(common + ["--dtype", "bfloat16", "--out", tmp_path / "b16"], capsys)
    assert code == 0, err
    code, _, err = run_cli(common + ["--dtype", "float32", "--out", tmp_path / "f32"], capsys)
    assert code == 0, err
    b16, f32 = Captures.load(tmp_path / "b16"), Captures.load(tmp_path / "f32")
    assert b16.meta["model_dtype"] == "bfloat16" and f32.meta["model_dtype"] == "float32"
    assert b16.tokens == f32.tokens and b16.layers == f32.layers
    a, b = f32.stream(), b16.stream()
    assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape == (31, 24, 576)
    rel = (b - a).norm(dim=-1) / a.norm(dim=-1)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert rel.max() < REL_MAX and rel.median() < REL_MEDIAN and cos.min() > COS_MIN, \
        (rel.max().item(), rel.median().item(), cos.min().item())


def test_load_model_bf16_parameters():
    model, _ = probelab.load_model("smollm2-135m", device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_first_token_is_an_attention_sink_and_mean_leaves_it_out(smollm2):
    """SmolLM2 adds no BOS: the first word is the sink (norm far above the rest); mean excludes it."""
    model, tok = smollm2
    texts = probelab.load_probes("analogies").texts[:24]
    assert tok(texts[0])["input_ids"][0] != tok.bos_token_id or tok.bos_token_id is None
    caps = probelab.capture(model, tok, texts, select="all", batch_size=24)
    mid = 15
    ratios = []
    for t in caps.stream():
        norms = t[mid].norm(dim=-1)
        ratios.append(float(norms[0] / norms[1:].median()))
    assert min(ratios) > 50  # measured 119x-187x (median 142x) over the 120 analogy probes
    mean = probelab.capture(model, tok, texts, select="mean", batch_size=24)
    incl = probelab.capture(model, tok, texts, select="mean", batch_size=24, include_first=True)
    for i, t in enumerate(caps.stream()):
        assert torch.allclose(mean.stream()[:, i], t[:, 1:].mean(1), atol=1e-4, rtol=1e-4)
        assert torch.allclose(incl.stream()[:, i], t.mean(1), atol=1e-4, rtol=1e-4)
    typical = torch.stack([t[mid, 1:].norm(dim=-1).median() for t in caps.stream()])
    # without the sink the mean state has the scale of an ordinary token; with it, many times more
    assert (mean.stream()[mid].norm(dim=-1) < 2 * typical).all()
    assert (incl.stream()[mid].norm(dim=-1) > 3 * typical).all()
