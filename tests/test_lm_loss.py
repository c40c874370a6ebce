"""Chunked next-token CE (probelab.train.lm_loss) against the plain logits path, and in the training script."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from probelab.errors import ProbelabError
from probelab.train.lm_loss import check_chunking_supported, chunked_lm_loss, lm_loss_from_model


def _reference(h, w, labels):
    logits = h @ w.T
    return F.cross_entropy(logits[:, :-1].reshape(-1, w.shape[0]), labels[:, 1:].reshape(-1), ignore_index=-100)


@pytest.mark.parametrize("chunk", [1, 4, 7, 1000])
def test_loss_and_gradients_equal_the_full_logits_path(chunk):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 9, 16, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(40, 16, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, 40, (3, 9), generator=g)
    labels[0, :4] = -100  # a masked prompt
    labels[2, 6:] = -100  # padding
    got, want = chunked_lm_loss(h, w, labels, chunk=chunk), _reference(h, w, labels)
    assert abs(float(got - want)) < 1e-12
    g_got = torch.autograd.grad(3.0 * got, (h, w))
    g_want = torch.autograd.grad(3.0 * want, (h, w))
    for a, b in zip(g_got, g_want):
        assert (a - b).abs().max() < 1e-12


def test_frozen_unembedding_gets_no_gradient_and_bf16_autocast_matches():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 33, 32, generator=g, requires_grad=True)
    w = torch.randn(100, 32, generator=g)  # frozen
    labels = torch.randint(0, 100, (2, 33), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = chunked_lm_loss(h, w, labels, chunk=16)
        want = _reference(h, w, labels).float()
    assert got.dtype == torch.float32
    assert abs(float(got - want)) < 1e-4 * float(want)
    (gh,) = torch.autograd.grad(got, h)
    (gh_ref,) = torch.autograd.grad(want, h)
    assert (gh - gh_ref).abs().max() < 2e-2 * gh_ref.abs().max()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="matching labels"):
        chunked_lm_loss(torch.randn(2, 5, 8), torch.randn(10, 8), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk must be"):
        chunked_lm_loss(torch.randn(2, 5, 8), torch.randn(10, 8), torch.zeros(2, 5, dtype=torch.long), chunk=0)


def test_model_loss_equals_hf_loss_for_base_and_control_models():
    from probelab.models.control import expand_model
    from probelab.models.tiny import tiny_llama

    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    for model in (tiny_llama(), expand_model(tiny_llama(), num_expanded=2)):
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        want = model(**batch, use_cache=False)
        out, ce = lm_loss_from_model(model, batch, chunk=5)
        assert abs(float(ce - want.loss)) < 1e-5
        if hasattr(want, "divergence_loss"):
            assert torch.equal(out.divergence_loss, want.divergence_loss)


def test_a_model_that_transforms_its_logits_is_refused():
    from probelab.errors import ProbelabError
    from probelab.models.tiny import tiny_llama

    model = tiny_llama()
    model.config.tie_word_embeddings = False
    model.lm_head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        model.lm_head.weight.copy_(model.get_input_embeddings().weight)
        model.lm_head.bias.fill_(3.0)
    ids = torch.randint(0, 256, (2, 6))
    with pytest.raises(ProbelabError, match="transforms its logits .an unembedding bias"):
        lm_loss_from_model(model, {"input_ids": ids, "labels": ids}, chunk=4)
    model.config.final_logit_softcapping = 30.0
    model.lm_head.bias = None
    with pytest.raises(ProbelabError, match="final_logit_softcapping"):
        lm_loss_from_model(model, {"input_ids": ids, "labels": ids}, chunk=4)
    model.config.final_logit_softcapping = None
    # a transform the config does not name is caught on the one logits row the model computes
    handle = model.lm_head.register_forward_hook(lambda _m, _a, out: out * 0.5)
    with pytest.raises(ProbelabError, match="does not compute its logits as hidden @ unembedding"):
        lm_loss_from_model(model, {"input_ids": ids, "labels": ids}, chunk=4)
    handle.remove()
    lm_loss_from_model(model, {"input_ids": ids, "labels": ids}, chunk=4)  # plain again: accepted


def test_no_gradient_work_without_grad_mode():
    h = torch.randn(2, 6, 8, requires_grad=True)
    w = torch.randn(20, 8, requires_grad=True)
    labels = torch.randint(0, 20, (2, 6))
    with torch.no_grad():
        loss = chunked_lm_loss(h, w, labels, chunk=4)
    assert not loss.requires_grad and loss.grad_fn is None
    assert abs(float(loss - _reference(h, w, labels))) < 1e-5


def test_chunking_is_refused_where_the_unembedding_is_sharded():
    for kind, stage in (("NO", None), ("MULTI_CPU", None), ("MULTI_GPU", None), ("DEEPSPEED", 2)):
        check_chunking_supported(kind, stage)  # whole weights on every process
    for kind, stage, name in (("FSDP", None, "FSDP"), ("DEEPSPEED", 3, "DeepSpeed ZeRO-3")):
        with pytest.raises(ProbelabError, match=f"which {name} shards: set train.loss_chunk=0") as e:
            check_chunking_supported(kind, stage)
        assert "\n" not in str(e.value)
