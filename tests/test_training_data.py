"""Offline data sources, splits and SFT batching for continual-SFT training."""
from __future__ import annotations

import pytest
import torch

from probelab.data import gsm8k_test, mmlu_items, skill_task, wiki_intros, wiki_split
from probelab.data.examples import Example
from probelab.data.mmlu import _all_items
from probelab.data.online import format_rows, load_online
from probelab.data.sft import IGNORE, collate, encode
from probelab.data.wiki import wiki_mc_items
from probelab.errors import NetworkDisabled, ProbelabError
from probelab.train.batches import BatchSchedule


@pytest.mark.parametrize("name", ["add3", "mul2", "chain3"])
def test_skill_split_disjoint_deterministic_and_correct(name):
    task = skill_task(name)
    train, test = task.split(n_train=2000, n_eval=200, seed=3)
    assert len(train) == 2000 and len(test) == 200
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    assert len({e.prompt for e in train}) == 2000
    again = task.split(n_train=2000, n_eval=200, seed=3)
    assert (train, test) == again
    assert task.split(n_train=10, n_eval=10, seed=4)[1] != test[:10]
    for ex in test[:50]:  # the answer is the arithmetic truth
        expr = ex.prompt.split("What is ", 1)[1].split("?", 1)[0]
        assert str(eval(expr)) == ex.answer and ex.response == " " + ex.answer


def test_unknown_task_is_one_line_error():
    with pytest.raises(ProbelabError, match="unknown task 'nope'; known: add3"):
        skill_task("nope")


def test_wiki_split_holds_out_articles():
    train, held = wiki_split(n_eval=40, n_train=None, seed=0)
    assert len(held) == 40 and len(train) > 8000
    assert not set(train) & set(held)
    assert wiki_split(n_eval=40, n_train=0, seed=0)[1] == held
    assert all(len(t) >= 200 for t in held)
    assert len(wiki_intros()) > 9000
    items = wiki_mc_items(60, seed=0, n_eval_intros=40)
    assert len(items) == 60 and all(len(it.choices) == 4 and 0 <= it.label < 4 for it in items)
    assert len({it.label for it in items}) == 4  # the right answer is not always in one place


def test_mmlu_drops_header_rows_and_samples_deterministically():
    items = _all_items()
    assert len(items) == 14042  # 14,044 lines minus the two repeated header rows
    assert all(it.question != "question" and it.label in range(4) for it in items)
    a, b = mmlu_items(50, seed=1), mmlu_items(50, seed=1)
    assert a == b and a != mmlu_items(50, seed=2)
    assert all(len(it.question) + sum(map(len, it.choices)) <= 300 for it in mmlu_items(30, max_chars=300))


def test_gsm8k_answers():
    items = gsm8k_test()
    assert len(items) == 1319
    assert items[0].answer == "18" and items[0].prompt.startswith("Question: Janet")
    assert all(it.answer.lstrip("-").replace(".", "").isdigit() for it in items)


def test_encode_masks_prompt_and_collate_masks_padding(tiny):
    _, tok = tiny
    rows = [encode(tok, Example("Q: 1+1?\nA:", " 2"), 64), encode(tok, Example("", "plain text"), 64)]
    r0 = rows[0]
    n_prompt = len(tok("Q: 1+1?\nA:")["input_ids"])
    assert r0["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert r0["labels"][n_prompt:] == r0["input_ids"][n_prompt:] and r0["labels"][-1] == tok.eos_token_id
    assert all(t != IGNORE for t in rows[1]["labels"])  # continual pretraining: every token
    b = collate(rows, tok.pad_token_id)
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape
    pad = b["attention_mask"] == 0
    assert pad.any() and (b["labels"][pad] == IGNORE).all() and (b["input_ids"][pad] == tok.pad_token_id).all()
    assert len(encode(tok, Example("x" * 100, " 2"), 16)["input_ids"]) == 16


def test_online_formatters_on_local_datasets():
    datasets = pytest.importorskip("datasets")
    math = datasets.Dataset.from_dict({"problem": ["What is 2+2?"], "generated_solution": ["2+2=4. \\boxed{4}"],
                                       "expected_answer": ["4"], "problem_source": ["gsm8k"]})
    ex = format_rows("openmath2", math)[0]
    assert (ex.prompt, ex.answer) == ("What is 2+2?", "4") and "boxed" in ex.response
    code = datasets.Dataset.from_dict({"instruction": ["Write add"], "output": ["def add(a,b): return a+b"]})
    assert format_rows("opencoder-stage2", code)[0].response.startswith("def add")
    with pytest.raises(ProbelabError, match="lacks column"):
        format_rows("openmath2", code)
    with pytest.raises(NetworkDisabled):
        load_online("openmath2", 2, allow_network=False)


def test_batch_schedule_epochs_and_ranks():
    s1 = BatchSchedule(10, micro_batch=2, grad_accum=1, world=1, seed=0)
    seen = [i for step in range(5) for i in s1.step_indices(step)]
    assert sorted(seen) == list(range(10))  # one epoch = each example once
    assert s1.step_indices(7) == BatchSchedule(10, 2, 1, 1, 0).step_indices(7)
    s2 = BatchSchedule(10, micro_batch=2, grad_accum=2, world=2, seed=0)
    per_rank = [s2.micro_batches(3, r) for r in range(2)]
    flat = sorted(i for mb in per_rank for m in mb for i in m)
    assert flat == sorted(s2.step_indices(3)) and all(len(m) == 2 for mb in per_rank for m in mb)
