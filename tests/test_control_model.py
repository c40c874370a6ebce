"""Control LLM model: identity at init, freezing, divergence (masking), KV cache, save/load, capture.

All on tiny random Llama / Qwen2 models (milliseconds per forward).
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

import probelab
from probelab.capture import Recorder, decoder_layers
from probelab.errors import ProbelabError
from probelab.models.control import (DIVERGENCE_NAMES, INTERPOLATOR_NAMES, STRATEGY_NAMES, ControlLayer,
                                     ControlLLMForCausalLM, ExpansionConfig, expand_model, load_control,
                                     save_control)
from probelab.models.tiny import tiny_llama, tiny_qwen2, tiny_tokenizer

ARCHS = {"llama": tiny_llama, "qwen2": tiny_qwen2}
TEXTS = ["king is to queen as man is to woman", "Paris", "the cat sat on the mat, quietly"]


def batch(tok, texts=TEXTS, side="right", **kw):
    tok.padding_side = side
    enc = tok(texts, return_tensors="pt", **{"padding": True, **kw})
    return enc["input_ids"], enc["attention_mask"]


def perturb(model, scale=0.05, seed=1):
    """Move every trainable parameter (expanded blocks, interpolators) away from its init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def expanded(arch="llama", **kw):
    base = ARCHS[arch]()
    ref = copy.deepcopy(base)
    return expand_model(base, **{"num_expanded": 2, **kw}).eval(), ref


# ---- identity at initialisation ---------------------------------------------------------------
@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
@pytest.mark.parametrize("interp", INTERPOLATOR_NAMES)
def test_logits_equal_base_at_init(arch, strategy, interp):
    tok = tiny_tokenizer()
    model, ref = expanded(arch, strategy=strategy, interpolation=interp, num_expanded=3)
    ids, mask = batch(tok)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).logits
        out = model(input_ids=ids, attention_mask=mask, labels=ids)
    assert (out.logits - want).abs().max().item() < 1e-5
    assert out.divergence_loss.item() == 0.0
    n_main = 4 + (model.expansion.strategy != "concat") * len(model.stacked_layers)
    assert len(decoder_layers(model)) == n_main == model.model.config.num_hidden_layers


def test_layer_choice_rule():
    assert ExpansionConfig(num_expanded=8).resolve(32).layers == [3, 7, 11, 15, 19, 23, 27, 31]
    assert ExpansionConfig(num_expanded=6).resolve(30).layers == [4, 9, 14, 19, 24, 29]
    assert ExpansionConfig(num_expanded=4).resolve(4).layers == [0, 1, 2, 3]
    assert ExpansionConfig(num_expanded=7).resolve(30).layers == [3, 7, 11, 15, 19, 23, 27]  # first N kept


def test_config_round_trip_and_names():
    cfg = ExpansionConfig(strategy="hybrid", interpolation="dlerp", num_expanded=2, divergence="cosine",
                          alpha="dynamic", cosine_margin=0.1).resolve(4)
    assert ExpansionConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert ExpansionConfig(num_expanded=8).name == "Lerp8-MSE"
    assert ExpansionConfig(num_expanded=8, divergence="none").name == "Lerp8"
    assert ExpansionConfig(num_expanded=8, alpha=0).name == "Lerp8"
    assert ExpansionConfig(alpha="0.5").alpha == 0.5


@pytest.mark.parametrize("kwargs, message", [
    ({"interpolation": "slerp"}, "unknown interpolator 'slerp'"),
    ({"strategy": "deep"}, "unknown strategy 'deep'"),
    ({"divergence": "kl"}, "unknown divergence 'kl'"),
    ({"alpha": "lots"}, "alpha must be a number or 'dynamic'"),
    ({"alpha": -1}, r"alpha \(--alpha\) must be a finite number >= 0"),
    ({"num_expanded": 0}, "num_expanded must be a positive integer"),
    ({"bogus": 1}, "unknown expansion fields: bogus"),
])
def test_bad_config_is_one_line_error(kwargs, message):
    with pytest.raises(ProbelabError, match=message) as e:
        expand_model(tiny_llama(), **kwargs)
    assert "\n" not in str(e.value)


def test_bad_models_are_refused():
    with pytest.raises(ProbelabError, match="cannot expand 5 layers: the model has only 4 layers"):
        expand_model(tiny_llama(), num_expanded=5)
    model = expand_model(tiny_llama(), num_expanded=2)
    with pytest.raises(ProbelabError, match="already a Control LLM"):
        expand_model(model, num_expanded=2)
    with pytest.raises(ProbelabError, match="already expanded"):
        expand_model(model.model, num_expanded=2)
    with pytest.raises(ProbelabError, match="not a decoder-only"):
        expand_model(torch.nn.Linear(2, 2))
    from transformers import T5Config, T5ForConditionalGeneration

    t5 = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2))
    with pytest.raises(ProbelabError, match="not a decoder-only"):
        expand_model(t5)


# ---- structure and freezing -------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_only_expanded_blocks_and_interpolators_train(strategy):
    model, _ = expanded(strategy=strategy, interpolation="plerp", num_expanded=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    layers = decoder_layers(model)
    want = set()
    for i, block in enumerate(layers):
        prefix = f"model.model.layers.{i}."
        if isinstance(block, ControlLayer):
            want |= {prefix + n for n, _ in block.named_parameters() if n.startswith(("expanded.", "interpolator."))}
        elif i in model.stacked_layers:
            want |= {prefix + n for n, _ in block.named_parameters()}
    assert trainable == want and trainable
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any("embed_tokens" in n for n in frozen) and any(n.endswith("model.norm.weight") for n in frozen)
    assert not any(".pretrained." in n for n in trainable)
    # the layer rule picks base blocks 0..3 for N=4; hybrid alternates stack / concat starting with stack
    kinds = {"concat": (0, 4), "stack": (4, 0), "hybrid": (2, 2)}[strategy]
    assert (len(model.stacked_layers), len(model.control_layers)) == kinds


def test_freeze_interpolator_keeps_lerp_weight_fixed():
    model, _ = expanded(interpolation="lerp", freeze_interpolator=True)
    assert all(not c.interpolator.logit.requires_grad for c in model.control_layers)
    assert all(p.requires_grad for c in model.control_layers for p in c.expanded.parameters())


def test_stack_inserts_identity_blocks_with_consecutive_cache_slots():
    model, _ = expanded(strategy="stack", num_expanded=2)
    layers = decoder_layers(model)
    assert model.stacked_layers == [2, 5]  # base blocks 1 and 3, each followed by its copy
    for i in model.stacked_layers:
        assert layers[i].self_attn.o_proj.weight.abs().sum() == 0 and layers[i].mlp.down_proj.weight.abs().sum() == 0
        assert torch.equal(layers[i].self_attn.q_proj.weight, layers[i - 1].self_attn.q_proj.weight)
    assert [b.self_attn.layer_idx for b in layers] == list(range(6))


def test_concat_copies_get_their_own_cache_slots():
    model, _ = expanded(arch="qwen2", strategy="hybrid", num_expanded=4)
    layers = decoder_layers(model)
    main = [(b.pretrained if isinstance(b, ControlLayer) else b).self_attn.layer_idx for b in layers]
    copies = [c.expanded.self_attn.layer_idx for c in model.control_layers]
    assert main == list(range(6)) and copies == [6, 7]
    assert model.config.get_text_config(decoder=True).num_hidden_layers == 8
    assert len(model.model.config.layer_types) == 6


# ---- divergence --------------------------------------------------------------------------------
def branch_streams(model, ids, mask):
    rec = Recorder()
    with torch.no_grad(), model.attach_recorder(rec):
        out = model(input_ids=ids, attention_mask=mask)
    return rec.data, out


@pytest.mark.parametrize("divergence, alpha", [("mse", 1.0), ("mse", 0.3), ("mse", "dynamic"), ("cosine", 2.0)])
def test_divergence_matches_brute_force_and_ignores_padding(divergence, alpha):
    tok = tiny_tokenizer()
    model, _ = expanded(interpolation="dlerp", divergence=divergence, alpha=alpha, cosine_margin=0.0)
    perturb(model)
    ids, mask = batch(tok)
    streams, out = branch_streams(model, ids, mask)
    assert out.divergence_loss.item() > 0
    terms = []
    for layer in model.merged_layers:
        pre, exp = streams["pretrained"][layer], streams["expanded"][layer]
        if divergence == "mse":
            per = ((exp - pre) ** 2).mean(-1)
        else:
            gap = torch.relu(1 - torch.nn.functional.cosine_similarity(pre, exp, dim=-1))
            per = torch.where(gap < 1, 0.5 * gap ** 2, gap - 0.5)
        per = per * (streams["weight"][layer] if alpha == "dynamic" else alpha)
        m = mask.bool()
        terms.append(per[m].mean())  # real tokens only
    assert out.divergence_loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    # more padding changes nothing: the mask removes it
    ids2, mask2 = batch(tok, padding="max_length", max_length=ids.shape[1] + 9)
    _, out2 = branch_streams(model, ids2, mask2)
    assert out2.divergence_loss.item() == pytest.approx(out.divergence_loss.item(), rel=1e-5)


def test_divergence_off_is_exactly_zero():
    tok = tiny_tokenizer()
    ids, mask = batch(tok)
    for kw in ({"divergence": "none"}, {"alpha": 0.0}, {"strategy": "stack"}):
        model, _ = expanded(**kw)
        perturb(model)
        with torch.no_grad():
            assert model(input_ids=ids, attention_mask=mask).divergence_loss.item() == 0.0


def test_losses_train_expanded_params_and_gates():
    tok = tiny_tokenizer()
    ids, mask = batch(tok)
    for interp in ("dlerp", "moe"):
        model, ref = expanded(interpolation=interp, num_expanded=2)
        model.train()
        perturb(model)
        out = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
        assert out.loss.item() > 0 and out.divergence_loss.item() > 0
        (out.loss + out.divergence_loss).backward()
        gate = model.control_layers[0].interpolator.gate.weight
        assert gate.grad is not None and gate.grad.abs().sum() > 0  # MoE: the LM loss reaches the gate
        assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
        assert model.control_layers[0].expanded.self_attn.q_proj.weight.grad.abs().sum() > 0


# ---- generation with a KV cache ---------------------------------------------------------------
@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("strategy", ["concat", "hybrid"])
def test_cached_generation_equals_uncached(arch, strategy):
    tok = tiny_tokenizer()
    model, _ = expanded(arch, strategy=strategy, interpolation="dlerp", num_expanded=4)
    perturb(model, scale=0.2)
    ids, mask = batch(tok, ["hello there", "a"], side="left")
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    cached = model.generate(**kw, use_cache=True)
    plain = model.generate(**kw, use_cache=False)
    assert torch.equal(cached, plain)
    # the cache really holds both branches: one slot per attention
    out = model(input_ids=ids, attention_mask=mask, use_cache=True)
    n = len(decoder_layers(model)) + len(model.control_layers)
    assert len(out.cache.layers) == n and all(layer.keys is not None for layer in out.cache.layers)


# ---- persistence --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, strategy, interp", [("llama", "concat", "plerp"), ("qwen2", "hybrid", "moe"),
                                                     ("llama", "stack", "lerp")])
def test_save_load_round_trip(tmp_path, arch, strategy, interp):
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    model, _ = expanded(arch, strategy=strategy, interpolation=interp, num_expanded=2, alpha="dynamic")
    perturb(model)
    folder = save_control(model, tmp_path / "ctl", tok)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "control_llm" and cfg["expansion"]["layers"] == [1, 3]
    assert cfg["base_config"]["num_hidden_layers"] == 4 and list(folder.glob("*.safetensors"))
    ids, mask = batch(tok)
    loaded = [probelab.load_model(folder)[0], AutoModelForCausalLM.from_pretrained(folder), load_control(folder)]
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask)
        for m in loaded:
            assert isinstance(m, ControlLLMForCausalLM) and m.expansion == model.expansion
            got = m(input_ids=ids, attention_mask=mask)
            assert torch.equal(got.logits, want.logits) and torch.equal(got.divergence_loss, want.divergence_loss)
            assert {n for n, p in m.named_parameters() if p.requires_grad} == \
                {n for n, p in model.named_parameters() if p.requires_grad}


def test_corrupt_or_inconsistent_checkpoint_is_one_line_error(tmp_path):
    tok = tiny_tokenizer()
    model, _ = expanded()
    folder = save_control(model, tmp_path / "ctl", tok)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["expansion"]["layers"] = [0, 2]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ProbelabError, match="do not match the rule"):
        probelab.load_model(folder)
    folder = save_control(model, tmp_path / "ctl2", tok)
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ProbelabError, match="corrupt"):
        probelab.load_model(folder)


# ---- analysis: capture streams and hidden states ------------------------------------------------
@pytest.mark.parametrize("interp", ["lerp", "dlerp"])
def test_capture_gives_branch_streams_from_one_pass(interp):
    tok = tiny_tokenizer()
    model, _ = expanded(strategy="hybrid", interpolation=interp, num_expanded=4)
    caps = probelab.capture(model, tok, TEXTS, select="all")
    assert model.merged_layers == [3, 6]  # blocks 0, 0+, [1], 2, 2+, [3]: stack, concat, stack, concat
    for s in ("pretrained", "expanded", "merged", "weight"):
        assert caps.layers[s] == model.merged_layers
    for t in range(len(TEXTS)):
        resid = caps.stream("resid")[t]
        for k, layer in enumerate(model.merged_layers):
            pre, exp, merged = (caps.stream(s)[t][k] for s in ("pretrained", "expanded", "merged"))
            assert torch.equal(pre, exp) and torch.equal(merged, pre) and torch.equal(merged, resid[layer])
            assert caps.stream("weight")[t][k].shape == (resid.shape[1], 1)
            assert torch.allclose(caps.stream("weight")[t][k], torch.tensor(0.5))
    perturb(model)
    caps = probelab.capture(model, tok, TEXTS, select="last")
    for k, layer in enumerate(model.merged_layers):
        pre, exp, merged, w = (caps.layer(layer, s) for s in ("pretrained", "expanded", "merged", "weight"))
        assert not torch.allclose(pre, exp)
        assert torch.allclose(merged, caps.layer(layer, "resid"))
        if interp == "dlerp":  # merged = (1 - w) pre + w exp, per token
            assert torch.allclose(merged, pre + w * (exp - pre), atol=1e-5)


def test_output_hidden_states_follow_hf_convention():
    tok = tiny_tokenizer()
    model, _ = expanded(strategy="hybrid", num_expanded=4)
    perturb(model)
    ids, mask = batch(tok)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    caps = probelab.capture(model, tok, TEXTS, select="all")
    assert len(out.hidden_states) == len(decoder_layers(model)) + 1
    m = mask[0].bool()
    assert torch.allclose(out.hidden_states[3][0][m], caps.stream("resid")[0][3], atol=1e-6)
    final = model.model.model.norm(caps.stream("resid")[0][-1])
    assert torch.allclose(out.hidden_states[-1][0][m], final, atol=1e-6)


def test_registries_have_every_documented_name():
    from probelab.models.control import DIVERGENCES, INTERPOLATORS, STRATEGIES

    assert set(INTERPOLATORS) == set(INTERPOLATOR_NAMES)
    assert set(DIVERGENCES) == set(DIVERGENCE_NAMES)
    assert set(STRATEGIES) == set(STRATEGY_NAMES)


# ---- training helpers: activation checkpointing, merge-back ------------------------------------
def test_activation_checkpointing_gives_the_same_gradients():
    tok = tiny_tokenizer()
    ids, mask = batch(tok)
    model, _ = expanded(interpolation="dlerp")
    perturb(model)
    model.train()

    def grads():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, attention_mask=mask, labels=ids)
        (out.loss + out.divergence_loss).backward()
        return {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.activation_checkpointing_enable()
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and plain
    assert all(torch.equal(plain[k], checkpointed[k]) for k in plain)


def test_merge_back_lerp_into_base_architecture():
    from probelab.models.control import merge_lerp

    tok = tiny_tokenizer()
    ids, mask = batch(tok)
    model, ref = expanded(strategy="concat", interpolation="lerp")
    with torch.no_grad():
        plain = merge_lerp(model)
        assert type(plain) is type(ref)
        assert (plain(input_ids=ids, attention_mask=mask).logits
                - ref(input_ids=ids, attention_mask=mask).logits).abs().max() < 1e-5
        perturb(model, scale=0.1)
        for c in model.control_layers:
            c.interpolator.logit.fill_(-40.0)  # w ~ 0: the output lerp and the weight lerp agree
        want = model(input_ids=ids, attention_mask=mask).logits
        assert (merge_lerp(model)(input_ids=ids, attention_mask=mask).logits - want).abs().max() < 1e-5
    dlerp, _ = expanded(interpolation="dlerp")
    with pytest.raises(ProbelabError, match="needs scalar Lerp"):
        merge_lerp(dlerp)


def test_frozen_linears_in_bf16_give_identical_autocast_training():
    from probelab.models.control.frozen import store_frozen_linears

    tok = tiny_tokenizer()
    ids, mask = batch(tok)
    model, _ = expanded(interpolation="dlerp")
    perturb(model)
    model.train()
    low = copy.deepcopy(model)
    assert store_frozen_linears(low) > 0
    assert all(p.dtype == torch.float32 for p in low.parameters() if p.requires_grad)
    assert low.control_layers[0].pretrained.mlp.down_proj.weight.dtype == torch.bfloat16
    if low.config.tie_word_embeddings:  # the untouched tensors are copied, the tie must survive
        assert low.get_input_embeddings().weight is low.get_output_embeddings().weight

    def step(m):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(input_ids=ids, attention_mask=mask, labels=ids)
        (out.loss + out.divergence_loss).backward()
        return out.loss, {n: p.grad for n, p in m.named_parameters() if p.grad is not None}

    (loss_a, grads_a), (loss_b, grads_b) = step(model), step(low)
    assert torch.equal(loss_a, loss_b) and grads_a.keys() == grads_b.keys()
    assert all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)
