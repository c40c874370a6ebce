"""Attribution scores against brute force on a tiny model + tiny random SAE (float64)."""
from __future__ import annotations

import pytest
import torch

from probelab.capture import capture, position_ids_from_mask
from probelab.errors import ProbelabError
from probelab.models.tiny import tiny_llama, tiny_tokenizer
from probelab.sae import IGNORE_LABEL, ConceptLabeler, attribute, resolve_spec
from probelab.sae.attribution import next_token_losses
from probelab.sae.encode import encode_parts
from probelab.sae.teacher import residual_leaf
from probelab.sae.tiny import tiny_sae

SITE_HOOK = "model.layers.1"  # output of block 1 = resid index 2


@pytest.fixture(scope="module")
def teacher():
    model = tiny_llama(num_layers=3, hidden=64, seed=1).double()
    sae = tiny_sae(d_in=64, d_sae=48, k=6, hook_name=SITE_HOOK, dtype="float64", seed=2)
    return model, sae


@pytest.fixture(scope="module")
def batch():
    tok = tiny_tokenizer()
    enc = tok(["Hello, friend.", "Sparse!"], return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def _loss_with_latents(model, sae, ids, activation: str, site: int = 2):
    """Run one unpadded text with the residual at ``site`` rewritten as h + decode(z) - stop_grad(decode(z)).

    The value is unchanged; the gradient wrt the leaf ``z`` flows through the decoder and the model's
    normal attention: an independent way to get dL/dz.
    """
    with torch.no_grad():
        with residual_leaf(model, site) as leaf:
            model(input_ids=ids, use_cache=False)
        h = leaf.h.detach()
        pre, post = encode_parts(sae, h)
    z = (post if activation == "post" else pre).clone().requires_grad_(True)
    recon = sae.decode(z)
    patched = h + recon - recon.detach()
    # residual_leaf detaches a replacement; this hook keeps the graph from z instead
    layer = model.model.layers[site - 1]
    handle = layer.register_forward_hook(lambda _m, _a, out: patched if not isinstance(out, tuple) else (patched, *out[1:]))
    try:
        logits = model(input_ids=ids, use_cache=False).logits
    finally:
        handle.remove()
    losses, valid = next_token_losses(logits, ids, torch.ones_like(ids))
    return z, losses, valid


def test_official_scores_equal_per_latent_autograd(teacher, batch):
    model, sae = teacher
    ids, mask = batch
    att = attribute(model, sae, ids, mask, "official", attention=None)  # the reference uses the model's attention
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        one = ids[b:b + 1, :n]
        z, losses, valid = _loss_with_latents(model, sae, one, "post")
        loss = losses.sum() / valid.sum()
        (g,) = torch.autograd.grad(loss, z)
        expected = (z * g).detach()[0]
        torch.testing.assert_close(att.scores[b, :n], expected, rtol=1e-8, atol=1e-10)
        assert (att.scores[b, n:] == 0).all()
    # official = post-activation: only the k active latents can score
    assert ((att.scores != 0).sum(-1) <= sae.cfg.k).all()


def test_eager_attention_for_the_sequence_loss_matches_and_is_restored(teacher, batch):
    # fp32 twins of the teacher (a float64 teacher keeps its own attention)
    model = tiny_llama(num_layers=3, hidden=64, seed=1)
    sae = tiny_sae(d_in=64, d_sae=48, k=6, hook_name=SITE_HOOK, seed=2)
    model.set_attn_implementation("sdpa")
    ids, mask = batch
    ref = attribute(model, sae, ids, mask, "official", attention=None).scores
    got = attribute(model, sae, ids, mask, "official", attention="eager").scores
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-6)
    # the default ("auto") keeps SDPA in fp32 and is eager under bf16 autocast on CPU for short texts
    assert torch.equal(attribute(model, sae, ids, mask, "official").scores, ref)
    bf16 = torch.bfloat16
    assert torch.equal(attribute(model, sae, ids, mask, "official", autocast=bf16).scores,
                       attribute(model, sae, ids, mask, "official", autocast=bf16, attention="eager").scores)
    assert model.config._attn_implementation == "sdpa"
    n = int(mask[1].sum())  # left padding under eager: same scores as the text alone
    left = torch.cat([torch.full((1, ids.shape[1] - n), 258), ids[1:, :n]], dim=1)
    left_mask = torch.cat([torch.zeros(1, ids.shape[1] - n, dtype=torch.long), torch.ones(1, n, dtype=torch.long)], 1)
    alone = attribute(model, sae, ids[1:, :n], None, "official", attention="eager").scores
    torch.testing.assert_close(attribute(model, sae, left, left_mask, "official", attention="eager").scores[0, -n:],
                               alone[0], rtol=1e-3, atol=1e-6)


def test_paper_scores_equal_per_position_loop(teacher, batch):
    model, sae = teacher
    ids, mask = batch
    att = attribute(model, sae, ids, mask, "paper")
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        one = ids[b:b + 1, :n]
        for t in range(n - 1):
            z, losses, _ = _loss_with_latents(model, sae, one, "pre")
            (g,) = torch.autograd.grad(losses[0, t], z)  # this position's next-token loss only
            torch.testing.assert_close(att.scores[b, t], (z * g).detach()[0, t], rtol=1e-7, atol=1e-10)
        assert (att.scores[b, n - 1] == 0).all()  # the last token predicts nothing
    # the pre-activation variant scores inactive latents too
    assert ((att.scores != 0).sum(-1)[mask.bool() & att.valid] > sae.cfg.k).all()


def test_paper_score_matches_finite_difference(teacher, batch):
    model, sae = teacher
    ids = batch[0][:1]
    att = attribute(model, sae, ids, None, "paper")
    t = 3
    with torch.no_grad():
        with residual_leaf(model, 2) as leaf:
            model(input_ids=ids, use_cache=False)
        h = leaf.h.detach()
        pre, _ = encode_parts(sae, h)
    for i in torch.topk(att.scores[0, t].abs(), 3).indices.tolist():
        eps = 1e-4  # RMSNorm computes in float32 even for a float64 model: FD is good to ~1e-4 relative
        direction = sae.decode(torch.zeros_like(pre[0, t]).index_fill(0, torch.tensor([i]), 1.0)) - sae.b_dec

        def loss_at(shift: float) -> float:
            h2 = h.clone()
            h2[0, t] += shift * direction
            with torch.no_grad(), residual_leaf(model, 2, replace=h2):
                logits = model(input_ids=ids, use_cache=False).logits
            return next_token_losses(logits, ids, torch.ones_like(ids))[0][0, t].item()

        fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
        assert att.scores[0, t, i].item() == pytest.approx(pre[0, t, i].item() * fd, rel=2e-3, abs=1e-7)


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_padding_and_batching_do_not_change_scores(teacher, batch, variant):
    model, sae = teacher
    ids, mask = batch
    together = attribute(model, sae, ids, mask, variant).scores
    n = int(mask[1].sum())
    alone = attribute(model, sae, ids[1:, :n], None, variant).scores
    torch.testing.assert_close(together[1, :n], alone[0], rtol=1e-8, atol=1e-10)
    left = torch.cat([torch.full((1, ids.shape[1] - n), 258), ids[1:, :n]], dim=1)
    left_mask = torch.cat([torch.zeros(1, ids.shape[1] - n, dtype=torch.long), torch.ones(1, n, dtype=torch.long)], 1)
    torch.testing.assert_close(attribute(model, sae, left, left_mask, variant).scores[0, -n:], alone[0],
                               rtol=1e-7, atol=1e-9)


def test_labels_are_topk_of_scores_and_ignore_positions_without_target(teacher, batch):
    model, sae = teacher
    ids, mask = batch
    labeler = ConceptLabeler(model, sae, k_attr=4, batch_size=1)
    att = labeler.attribution(ids, mask)
    labels = labeler(ids, mask)
    assert labels.shape == (*ids.shape, 4) and labels.dtype == torch.long
    valid = att.valid
    top = torch.topk(att.scores, 4, dim=-1)
    assert torch.equal(labels[valid], top.indices[valid])
    assert (labels[~valid] == IGNORE_LABEL).all()
    # every chosen label scores at least as high as every unchosen latent
    chosen = att.scores.gather(-1, labels.clamp(min=0))
    assert (chosen[valid].min(-1).values[:, None] >= att.scores[valid].scatter(-1, labels[valid], -1e9)).all()
    torch.testing.assert_close(labeler.scores(ids, mask), att.scores)


def test_absolute_sign_and_overrides(teacher, batch):
    model, sae = teacher
    ids, mask = batch
    signed = attribute(model, sae, ids, mask, "official").scores
    absolute = attribute(model, sae, ids, mask, resolve_spec("official", sign="absolute")).scores
    torch.testing.assert_close(absolute, signed.abs())
    assert resolve_spec("paper", loss="sequence").loss == "sequence"
    with pytest.raises(ProbelabError, match="unknown attribution loss"):
        resolve_spec("official", loss="future")
    with pytest.raises(ProbelabError, match="unknown attribution variant"):
        resolve_spec("nope")


def test_teacher_is_left_untouched(teacher, batch):
    model, sae = teacher
    ids, mask = batch
    before = {n: p.clone() for n, p in model.named_parameters()}
    impl = model.config._attn_implementation
    for variant in ("official", "paper"):
        ConceptLabeler(model, sae, variant=variant)(ids, mask)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert model.config._attn_implementation == impl


def test_sae_input_is_the_captured_residual(teacher):
    model, sae = teacher
    tok = tiny_tokenizer()
    texts = ["Concepts per token.", "Hi"]
    caps = capture(model, tok, texts, select="all")
    enc = tok(texts, return_tensors="pt", padding=True)
    att = ConceptLabeler(model, sae).attribution(enc["input_ids"], enc["attention_mask"])
    for b, text_states in enumerate(caps.states["resid"]):
        n = text_states.shape[1]
        torch.testing.assert_close(att.residual[b, :n].float(), text_states[2].float(), rtol=1e-5, atol=1e-5)


def test_position_ids_are_padding_safe_in_attribution(teacher):
    assert position_ids_from_mask(torch.tensor([[0, 1, 1]])).tolist() == [[0, 0, 1]]


def test_bad_input_is_one_line_error(teacher):
    model, sae = teacher
    labeler = ConceptLabeler(model, sae)
    with pytest.raises(ProbelabError, match="at least one token"):
        labeler(torch.zeros(1, 0, dtype=torch.long))
    too_long = torch.zeros(1, model.config.max_position_embeddings + 1, dtype=torch.long)
    with pytest.raises(ProbelabError, match="exceed the teacher's context"):
        labeler(too_long)
    with pytest.raises(ProbelabError, match="k_attr"):
        ConceptLabeler(model, sae, k_attr=0)


def test_smollm2_site_13_is_block_12_output(smollm2):
    """The recipe's hook 'model.layers.12' reads capture's resid index 13 on the embedded model."""
    model, tok = smollm2
    sae = tiny_sae(d_in=576, d_sae=256, k=16, hook_name="model.layers.12")
    labeler = ConceptLabeler(model, sae, k_attr=4)
    assert labeler.site == 13
    text = "The Eiffel Tower is in Paris."
    enc = tok([text], return_tensors="pt")
    att = labeler.attribution(enc["input_ids"], enc["attention_mask"])
    caps = capture(model, tok, [text], select="all")
    torch.testing.assert_close(att.residual[0], caps.states["resid"][0][13], rtol=1e-4, atol=1e-3)
    labels = labeler.labels_from(att)
    assert (labels[0, -1] == IGNORE_LABEL).all() and (labels[0, :-1] >= 0).all()


def test_bf16_autocast_scores_track_fp32(batch):
    model, sae = tiny_llama(num_layers=3, seed=1), tiny_sae(d_in=64, d_sae=48, k=6, hook_name=SITE_HOOK)
    ids, mask = batch
    exact = attribute(model, sae, ids, mask, "official").scores
    fast = attribute(model, sae, ids, mask, "official", autocast=torch.bfloat16).scores
    assert fast.dtype == exact.dtype
    corr = torch.corrcoef(torch.stack([exact.flatten(), fast.flatten()]))[0, 1]
    assert corr > 0.98


def test_paper_variant_on_qwen2_matches_per_position_loop():
    """A second architecture (attention biases): batched next-token gradients equal the loop."""
    from probelab.models.tiny import tiny_qwen2

    model = tiny_qwen2(num_layers=2, seed=4).double()
    sae = tiny_sae(d_in=64, d_sae=32, k=4, hook_name="model.layers.0", dtype="float64", seed=5)
    ids = tiny_tokenizer()(["Qwen!"], return_tensors="pt")["input_ids"]
    att = attribute(model, sae, ids, None, "paper")
    for t in range(ids.shape[1] - 1):
        z, losses, _ = _loss_with_latents(model, sae, ids, "pre", site=1)
        (g,) = torch.autograd.grad(losses[0, t], z)
        torch.testing.assert_close(att.scores[0, t], (z * g).detach()[0, t], rtol=1e-7, atol=1e-10)
