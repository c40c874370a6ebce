"""Evals against brute force on a tiny model: batching and padding must not change any number."""
from __future__ import annotations

import math

import pytest
import torch

from probelab.data.examples import Example
from probelab.data.mmlu import MCItem
from probelab.evals import extract_answer, mc_accuracy, perplexity, task_accuracy
from probelab.evals.multiple_choice import cloze_prompt, letter_prompt
from probelab.errors import ProbelabError


def _nll_unpadded(model, ids: list[int]) -> list[float]:
    """-log p of each token after the first, one sequence alone (no padding, no mask)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return [-float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1)]


def test_perplexity_equals_brute_force(tiny):
    model, tok = tiny
    texts = ["a", "hello world, how are you", "abc", "The quick brown fox jumps over the lazy dog" * 2]
    res = perplexity(model, tok, texts, max_len=40, batch_size=3)
    nll = [x for t in texts for x in _nll_unpadded(model, tok(t)["input_ids"][:40])]
    assert res.tokens == len(nll)
    assert res.value == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-5)


def test_mc_cloze_and_letter_equal_brute_force(tiny):
    model, tok = tiny
    items = [MCItem("What is 2+2?", ("4", "five", "22", "a much longer answer"), 0),
             MCItem("Capital of France?", ("Paris", "Rome", "x", "Berlin"), 3),
             MCItem("Pick one", ("b", "c", "d", "e"), 1)]
    res = mc_accuracy(model, tok, items, "cloze", batch_size=5)
    for it, pred in zip(items, res.predictions):
        p = tok(cloze_prompt(it))["input_ids"]
        scores = []
        for c in it.choices:
            cont = tok(" " + c, add_special_tokens=False)["input_ids"]
            nll = _nll_unpadded(model, p + cont)[len(p) - 1:]
            scores.append(-sum(nll) / len(c))
        assert pred == max(range(4), key=scores.__getitem__)
    assert res.accuracy == sum(p == it.label for p, it in zip(res.predictions, items)) / 3
    assert res.chance == 0.25

    res = mc_accuracy(model, tok, items, "letter", batch_size=2)
    for it, pred in zip(items, res.predictions):
        ids = tok(letter_prompt(it))["input_ids"]
        with torch.no_grad():
            last = model(input_ids=torch.tensor([ids])).logits[0, -1]
        letters = [tok(" " + L, add_special_tokens=False)["input_ids"][-1] for L in "ABCD"]
        assert pred == int(torch.argmax(last[letters]))
    with pytest.raises(ProbelabError, match="unknown multiple-choice format"):
        mc_accuracy(model, tok, items, "bogus")


def _greedy_alone(model, tok, prompt: str, n: int) -> str:
    ids = tok(prompt)["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
    return tok.decode(out, skip_special_tokens=True)


def test_task_accuracy_batched_matches_one_by_one(tiny):
    model, tok = tiny
    prompts = ["Question: What is 1 + 2?\nAnswer:", "Q: 7?", "Question: What is 100 + 250?\nAnswer:"]
    alone = [_greedy_alone(model, tok, p, 5) for p in prompts]
    right = [Example(p, "", a) for p, a in zip(prompts, [extract_answer(x) for x in alone])]
    res = task_accuracy(model, tok, right, max_new_tokens=5, batch_size=3)  # left-padded batch
    assert res.outputs == alone and res.accuracy == 1.0
    wrong = [Example(p, "", "not-" + extract_answer(x)) for p, x in zip(prompts, alone)]
    assert task_accuracy(model, tok, wrong, max_new_tokens=5).accuracy == 0.0


@pytest.mark.parametrize("text,answer", [(" 936\n\nThe answer", "936"), (" -12 is it", "-12"),
                                         (" 1,234.", "1234"), ("\n", ""), (" 12 + 3 =", "12")])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer
