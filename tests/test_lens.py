"""Logit lens per branch: invariants on tiny random models (last layer = model output, branches at init)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import probelab
from probelab.analysis.lens import branch_difference, final_norm, lens, unembed
from probelab.errors import ProbelabError
from probelab.models.control import ExpansionConfig, expand_model
from probelab.models.tiny import tiny_llama, tiny_qwen2, tiny_tokenizer

TEXT = "king is to queen as man is to"


def model_logits(model, tok, text):
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits[0].float()


@pytest.mark.parametrize("build", [tiny_llama, tiny_qwen2])
def test_last_layer_is_the_model_output(build):
    model, tok = build(), tiny_tokenizer()
    res = probelab.lens(model, tok, TEXT, top_k=3)
    logits = model_logits(model, tok, TEXT)
    s = res.streams["resid"]
    assert s.layers == list(range(model.config.num_hidden_layers + 1))
    assert s.top_ids.shape == (len(s.layers), logits.shape[0], 3)
    # last layer: top token at every position is the model's greedy token; KL to itself is 0
    assert s.top_ids[-1, :, 0].tolist() == logits.argmax(-1).tolist()
    assert res.greedy_id == int(logits[-1].argmax())
    np.testing.assert_allclose(s.top_probs[-1, :, 0], torch.softmax(logits, -1).max(-1).values.numpy(), rtol=1e-5)
    np.testing.assert_allclose(s.kl[-1], 0.0, atol=1e-6)
    assert (s.target_rank[-1] == 1).all() and (s.kl >= 0).all()
    # entropy is the entropy of the softmax; probabilities of the top-k are sorted
    p = torch.softmax(logits, -1)
    np.testing.assert_allclose(s.entropy[-1], -(p * p.log()).sum(-1).numpy(), rtol=1e-4)
    assert (np.diff(s.top_probs, axis=-1) <= 1e-7).all()


def test_lens_equals_a_manual_read_of_hidden_states(tiny):
    model, tok = tiny
    res = lens(model, tok, TEXT)
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
        # HF applies the final norm to its last hidden state; the lens reads the raw block outputs before it
        for layer in (0, 2):
            manual = model.lm_head(model.model.norm(hs[layer][0]))
            assert res.streams["resid"].top_ids[layer, :, 0].tolist() == manual.argmax(-1).tolist()
            lp = torch.log_softmax(manual, -1)
            lf = torch.log_softmax(model_logits(model, tok, TEXT), -1)
            kl = (lf.exp() * (lf - lp)).sum(-1)
            np.testing.assert_allclose(res.streams["resid"].kl[layer], kl.numpy(), rtol=1e-4, atol=1e-6)
    assert final_norm(model) is model.model.norm
    torch.testing.assert_close(unembed(model, hs[2][0]), model.lm_head(model.model.norm(hs[2][0])))


def test_target_token_probability_and_rank(tiny):
    model, tok = tiny
    res = lens(model, tok, TEXT, target="q")
    qid = tok("q", add_special_tokens=False)["input_ids"][0]
    assert set(res.target_ids) == {qid} and res.target_given and set(res.targets) == {"q"}
    logits = model_logits(model, tok, TEXT)
    s = res.streams["resid"]
    np.testing.assert_allclose(s.target_prob[-1], torch.softmax(logits, -1)[:, qid].numpy(), rtol=1e-5)
    assert s.target_rank[-1].tolist() == ((logits > logits[:, qid:qid + 1]).sum(-1) + 1).tolist()
    row = res.rows(-1)[-1]
    assert row["target"] == "q" and row["target_rank"] == int(s.target_rank[-1, -1])
    assert lens(model, tok, TEXT, target=qid).target_ids == res.target_ids


def test_default_target_is_the_greedy_prediction_at_each_position(tiny):
    model, tok = tiny
    res = lens(model, tok, TEXT)
    assert not res.target_given
    assert res.target_ids == model_logits(model, tok, TEXT).argmax(-1).tolist()


def control(scale: float = 0.0):
    model = expand_model(tiny_llama(), ExpansionConfig(num_expanded=2)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.control_layers:
            for p in layer.expanded.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def test_control_llm_branches_identical_at_init_and_apart_after_perturbing():
    tok = tiny_tokenizer()
    res = lens(control(0.0), tok, TEXT)
    assert list(res.streams) == ["resid", "pretrained", "expanded", "merged"]
    assert res.streams["expanded"].layers == [2, 4] == res.meta["merged_layers"]
    rows = {(r["stream"], r["layer"]): r for r in res.rows(-1)}
    for layer in (2, 4):
        same = [rows[(s, layer)] for s in ("pretrained", "expanded", "merged", "resid")]
        assert all({k: v for k, v in r.items() if k != "stream"} == {k: v for k, v in same[0].items() if k != "stream"}
                   for r in same)
    for name in ("pretrained", "expanded", "merged"):
        for metric in ("target_prob", "kl", "entropy"):
            np.testing.assert_array_equal(res.streams[name].metric(metric), res.streams["resid"].metric(metric)[[2, 4]])
    assert max(branch_difference(res).values()) == 0.0
    # the plain model's lens equals the expanded-at-init model's resid lens
    plain = lens(tiny_llama(), tok, TEXT).streams["resid"]
    np.testing.assert_allclose(plain.target_prob, res.streams["resid"].target_prob, atol=1e-6)

    moved = lens(control(0.5), tok, TEXT)
    diff = branch_difference(moved)
    assert diff[2] > 1e-3 and diff[4] > 1e-3
    # the pretrained branch at the first merged layer sees the same input as before: unchanged
    np.testing.assert_allclose(moved.streams["pretrained"].entropy[0], res.streams["pretrained"].entropy[0], rtol=1e-5)
    assert (moved.streams["pretrained"].top_ids[0] == res.streams["pretrained"].top_ids[0]).all()
    # the model output still equals the last layer's lens
    assert moved.streams["resid"].top_ids[-1, -1, 0] == int(model_logits(control(0.5), tok, TEXT)[-1].argmax())


def test_streams_choice_and_json(tiny):
    model, tok = tiny
    res = lens(control(0.0), tok, TEXT, streams=["expanded"])
    assert list(res.streams) == ["resid", "expanded"]
    d = res.to_dict()
    assert d["greedy_next_token"] == res.greedy_token
    assert len(d["rows"]) == 5 + 2 and d["rows"][0]["stream"] == "resid"
    assert np.array(d["grids"]["resid"]["target_prob"]).shape == (5, len(res.tokens))
    import json

    json.dumps(d)


def test_bad_input_is_one_line_error(tiny):
    model, tok = tiny
    with pytest.raises(ProbelabError, match="empty"):
        lens(model, tok, "  ")
    with pytest.raises(ProbelabError, match="is 2 tokens"):
        lens(model, tok, TEXT, target="ab")
    with pytest.raises(ProbelabError, match="outside the vocabulary"):
        lens(model, tok, TEXT, target=10_000)
    with pytest.raises(ProbelabError, match="no stream 'expanded'"):
        lens(model, tok, TEXT, streams=["expanded"])
    with pytest.raises(ProbelabError, match="position 99"):
        lens(model, tok, TEXT).rows(99)


def test_long_text_is_truncated_with_a_warning(tiny):
    model, tok = tiny
    with pytest.warns(UserWarning, match="truncated to the first 8"):
        res = lens(model, tok, TEXT, max_tokens=8)
    assert len(res.tokens) == 8 and res.meta["truncated"]


def test_after_training_the_expanded_branch_predicts_the_new_token_and_the_pretrained_one_stays_put():
    """A few optimiser steps on one sentence (only the expanded blocks and interpolators train): at the
    first merged layer the pretrained branch reads exactly as before, the expanded branch ranks the
    trained next token higher, and the model's output gives it more probability."""
    tok = tiny_tokenizer()
    model = control(0.0)
    before = lens(model, tok, "king is to ", target="q")
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    ids = tok("king is to queen", return_tensors="pt")["input_ids"]
    for _ in range(40):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = lens(model.eval(), tok, "king is to ", target="q")
    pre_b, pre_a = before.streams["pretrained"], after.streams["pretrained"]
    np.testing.assert_allclose(pre_a.target_prob[0], pre_b.target_prob[0], rtol=1e-5)  # same input, frozen block
    assert after.streams["expanded"].target_rank[0, -1] < pre_a.target_rank[0, -1]
    assert after.streams["resid"].target_prob[-1, -1] > 2 * before.streams["resid"].target_prob[-1, -1]
    assert min(branch_difference(after).values()) > 0 == max(branch_difference(before).values())


def test_bfloat16_model_last_layer_is_still_the_model_output():
    model, tok = tiny_llama().to(torch.bfloat16), tiny_tokenizer()
    res = lens(model, tok, TEXT)
    logits = model_logits(model, tok, TEXT)
    assert res.streams["resid"].top_ids[-1, :, 0].tolist() == logits.argmax(-1).tolist()
    assert float(res.streams["resid"].kl[-1].max()) == 0.0
