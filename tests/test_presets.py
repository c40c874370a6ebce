"""Control LLM presets (``probelab`` vs ``official``) and each knob on its own.

The ``official`` preset reproduces the defaults of the Control LLM authors' code: a fixed Lerp
factor of 0.5, gates at torch's random Linear init (bias = the init logit), MoE divergence only on
tokens routed to the expanded branch, dynamic alpha with gradient. Tiny random models, seconds.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

import probelab
from probelab.capture import Recorder
from probelab.cli import main
from probelab.errors import ProbelabError
from probelab.models.control import PRESETS, ExpansionConfig, expand_model, load_control, save_control
from probelab.models.tiny import tiny_llama, tiny_tokenizer

TEXTS = ["king is to queen as man is to woman", "Paris", "the cat sat on the mat, quietly"]


def batch(tok, texts=TEXTS, **kw):
    tok.padding_side = "right"
    enc = tok(texts, return_tensors="pt", padding=True, **kw)
    return enc["input_ids"], enc["attention_mask"]


def expanded(**kw):
    torch.manual_seed(0)
    base = tiny_llama()
    ref = copy.deepcopy(base)
    return expand_model(base, **{"num_expanded": 2, **kw}).eval(), ref


def run_cli(args):
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        assert e.code in (0, None), e.code


# ---- the config: presets fill unset knobs; explicit knobs win; saved and restored ----------------
def test_presets_fill_only_unset_knobs():
    assert ExpansionConfig().freeze_interpolator is False and ExpansionConfig().gate_init == "zero"
    off = ExpansionConfig(preset="official")
    assert (off.freeze_interpolator, off.gate_init, off.moe_divergence, off.detach_alpha) == \
        (True, "random", "routed", False)
    for knob, official_value in PRESETS["official"].items():
        probelab_value = PRESETS["probelab"][knob]
        cfg = ExpansionConfig(preset="official", **{knob: probelab_value})
        assert getattr(cfg, knob) == probelab_value  # the one knob given wins
        assert all(getattr(cfg, k) == v for k, v in PRESETS["official"].items() if k != knob)
        cfg = ExpansionConfig(**{knob: official_value})
        assert getattr(cfg, knob) == official_value
        assert all(getattr(cfg, k) == v for k, v in PRESETS["probelab"].items() if k != knob)
    assert ExpansionConfig.from_dict(off.to_dict()) == off


def test_old_expansion_blocks_load_as_probelab():
    old = {"strategy": "concat", "interpolation": "dlerp", "num_expanded": 2, "divergence": "mse", "alpha": 1.0,
           "cosine_margin": 0.0, "lerp_init": 0.0, "freeze_interpolator": False, "base_model": "",
           "num_base_layers": 4, "layers": [1, 3]}
    cfg = ExpansionConfig.from_dict(old)
    assert (cfg.preset, cfg.gate_init, cfg.moe_divergence, cfg.detach_alpha) == ("probelab", "zero", "all", True)


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "paper"}, "unknown preset 'paper'"),
    ({"gate_init": "normal"}, "unknown gate_init 'normal'"),
    ({"moe_divergence": "some"}, "unknown moe_divergence 'some'"),
    ({"freeze_interpolator": "yes"}, "freeze_interpolator must be true or false"),
])
def test_bad_knobs_are_one_line_errors(kwargs, message):
    with pytest.raises(ProbelabError, match=message):
        ExpansionConfig(**kwargs)


def test_overriding_the_preset_rederives_its_knobs():
    tok_cfg = ExpansionConfig(preset="official", interpolation="dlerp")
    model, _ = expanded(interpolation="dlerp")
    model2 = expand_model(tiny_llama(), tok_cfg, preset="probelab", num_expanded=2)
    assert model2.expansion.gate_init == "zero" and model2.expansion.freeze_interpolator is False
    model3 = expand_model(tiny_llama(), tok_cfg, preset="probelab", gate_init="random", num_expanded=2)
    assert model3.expansion.gate_init == "random" and model3.expansion.freeze_interpolator is False
    assert model.expansion.preset == "probelab"


# ---- what `probelab expand --preset official` saves ------------------------------------------
def test_cli_official_lerp_is_fixed_at_one_half(tmp_path, capsys):
    out = tmp_path / "lerp"
    run_cli(["expand", "tiny-llama", out, "--preset", "official", "--interpolation", "lerp"])  # as documented
    assert "official" in capsys.readouterr().out
    block = json.loads((out / "config.json").read_text())["expansion"]
    assert block["preset"] == "official" and block["freeze_interpolator"] is True
    model, _ = probelab.load_model(out)
    assert len(model.control_layers) == 4  # default N = 8, capped at the tiny model's 4 layers
    for c in model.control_layers:
        assert torch.sigmoid(c.interpolator.logit).item() == 0.5
        assert not c.interpolator.logit.requires_grad
    # the probelab preset trains it
    run_cli(["expand", "tiny-llama", tmp_path / "p", "--interpolation", "lerp", "-n", "2"])
    model, _ = probelab.load_model(tmp_path / "p")
    assert all(c.interpolator.logit.requires_grad for c in model.control_layers)


def test_cli_official_dlerp_gates_are_random_and_restored(tmp_path):
    out = tmp_path / "dlerp"
    run_cli(["expand", "tiny-llama", out, "--preset", "official", "--interpolation", "dlerp"])
    model = load_control(out)
    again = load_control(out)
    for c, d in zip(model.control_layers, again.control_layers):
        w = c.interpolator.gate.weight
        assert w.abs().min() > 0 and w.std() > 1e-3                      # torch's random Linear init
        assert torch.equal(w, d.interpolator.gate.weight)                # loaded, not re-initialised
        assert c.interpolator.gate.bias.item() == 0.0                    # bias = the init logit
        assert not c.interpolator.gate.bias.requires_grad and w.requires_grad  # factor frozen, weights train
    # one knob on its own: zero gates under the official preset
    run_cli(["expand", "tiny-llama", tmp_path / "z", "--preset", "official", "--interpolation", "dlerp",
             "-n", "2", "--gate-init", "zero"])
    model = load_control(tmp_path / "z")
    assert all(c.interpolator.gate.weight.abs().max() == 0 for c in model.control_layers)
    assert model.expansion.freeze_interpolator is True


def test_cli_bad_preset_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["expand", "tiny-llama", str(tmp_path / "o"), "--preset", "paper"])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "unknown preset 'paper'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


# ---- identity at init -------------------------------------------------------------------------
@pytest.mark.parametrize("interp", ["lerp", "dlerp", "dlerpin", "moe"])
def test_official_preset_keeps_identity_at_init(interp):
    """Random gates give per-token weights != sigmoid(f), but they weigh two equal branches."""
    tok = tiny_tokenizer()
    model, ref = expanded(preset="official", interpolation=interp)
    ids, mask = batch(tok)
    rec = Recorder()
    with torch.no_grad(), model.attach_recorder(rec):
        out = model(input_ids=ids, attention_mask=mask)
        want = ref(input_ids=ids, attention_mask=mask).logits
    assert (out.logits - want).abs().max().item() < 1e-5
    assert out.divergence_loss.item() == 0.0
    w = torch.cat([rec.data["weight"][layer][mask.bool()].flatten() for layer in model.merged_layers])
    if interp in ("dlerp", "dlerpin"):
        assert (w - 0.5).abs().max() > 1e-3  # the random gate moved w off sigmoid(0)
    if interp == "moe":
        assert 0 < w.mean() < 1  # tokens split between the branches from step 0


def test_official_plerp_breaks_identity_at_init():
    """The official code starts Plerp's lateral map at identity + 0.01·N(0, 1): documented exception."""
    tok = tiny_tokenizer()
    ids, mask = batch(tok)
    model, ref = expanded(preset="official", interpolation="plerp")
    with torch.no_grad():
        diff = (model(input_ids=ids, attention_mask=mask).logits - ref(input_ids=ids, attention_mask=mask).logits)
    assert diff.abs().max().item() > 1e-4
    model, ref = expanded(preset="official", interpolation="plerp", gate_init="zero")
    with torch.no_grad():
        diff = (model(input_ids=ids, attention_mask=mask).logits - ref(input_ids=ids, attention_mask=mask).logits)
    assert diff.abs().max().item() < 1e-5


# ---- freezing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("interp, frozen", [("lerp", "logit"), ("plerp", "logit"), ("dlerp", "gate.bias"),
                                            ("dlerpin", "gate.bias"), ("moe", "gate.bias")])
def test_freeze_interpolator_fixes_the_interpolation_factor(interp, frozen):
    model, _ = expanded(interpolation=interp, freeze_interpolator=True)
    for c in model.control_layers:
        params = dict(c.interpolator.named_parameters())
        assert not params[frozen].requires_grad
        assert all(p.requires_grad for n, p in params.items() if n != frozen)
    model, _ = expanded(interpolation=interp)
    assert all(p.requires_grad for c in model.control_layers for p in c.interpolator.parameters())


# ---- MoE divergence on routed tokens: against a hand computation --------------------------------
def moe_streams(model, ids, mask):
    """Branch outputs, 0/1 routing and the block inputs at every concat layer."""
    inputs = {}
    hooks = [c.register_forward_pre_hook(lambda m, args, kw, i=c.index: inputs.__setitem__(i, (args or (kw["hidden_states"],))[0]),
                                         with_kwargs=True) for c in model.control_layers]
    rec = Recorder()
    try:
        with torch.no_grad(), model.attach_recorder(rec):
            out = model(input_ids=ids, attention_mask=mask)
    finally:
        for h in hooks:
            h.remove()
    return rec.data, inputs, out


@pytest.mark.parametrize("alpha", [0.7, "dynamic"])
def test_moe_routed_divergence_matches_hand_computation(alpha):
    tok = tiny_tokenizer()
    ids, mask = batch(tok)
    model, _ = expanded(interpolation="moe", alpha=alpha, gate_init="random", moe_divergence="routed")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # move the expanded blocks so the branches differ
        for c in model.control_layers:
            for p in c.expanded.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    streams, inputs, out = moe_streams(model, ids, mask)
    m = mask.bool()
    routed_terms, all_terms = [], []
    for c in model.control_layers:
        layer = c.index + 1
        pre, exp = streams["pretrained"][layer], streams["expanded"][layer]
        gate = c.interpolator.gate
        logits = inputs[c.index].float() @ gate.weight.detach().T.float() + gate.bias.detach().float()
        p_exp = torch.softmax(logits, -1)[..., 1]
        routed = (p_exp > 1 - p_exp).float()
        assert torch.equal(routed, streams["weight"][layer])
        assert 0 < routed[m].mean() < 1  # a real mix of routed and kept tokens
        per = ((exp - pre) ** 2).mean(-1)
        coef = p_exp if alpha == "dynamic" else torch.full_like(p_exp, alpha)
        routed_terms.append((per * routed * coef)[m].sum() / m.sum())  # mean over ALL real tokens
        all_terms.append((per * (routed if alpha == "dynamic" else coef))[m].mean())
    want = torch.stack(routed_terms).mean().item()
    assert out.divergence_loss.item() == pytest.approx(want, rel=1e-5)
    # the probelab knob: every real token (dynamic alpha: the 0/1 routing weight)
    model.expansion.moe_divergence = "all"
    model._state.moe_divergence = "all"
    _, _, out_all = moe_streams(model, ids, mask)
    assert out_all.divergence_loss.item() == pytest.approx(torch.stack(all_terms).mean().item(), rel=1e-5)
    if alpha != "dynamic":
        assert out_all.divergence_loss.item() > out.divergence_loss.item()


def test_moe_routed_divergence_survives_save_and_load(tmp_path):
    model, _ = expanded(interpolation="moe", preset="official")
    save_control(model, tmp_path / "m", tiny_tokenizer())
    loaded = load_control(tmp_path / "m")
    assert loaded._state.moe_divergence == "routed" and loaded._state.detach_alpha is False
    assert loaded.expansion == model.expansion


# ---- dynamic alpha with or without gradient -----------------------------------------------------
@pytest.mark.parametrize("detach", [True, False])
def test_detach_alpha_decides_whether_the_divergence_trains_the_gate(detach):
    tok = tiny_tokenizer()
    ids, mask = batch(tok)
    model, _ = expanded(interpolation="dlerp", alpha="dynamic", gate_init="random", detach_alpha=detach)
    model.train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for c in model.control_layers:
            for p in c.expanded.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model(input_ids=ids, attention_mask=mask).divergence_loss.backward()
    grad = model.control_layers[-1].interpolator.gate.weight.grad  # the last: no later layer reads its output
    if detach:
        assert grad is None or grad.abs().max() == 0
    else:
        assert grad is not None and grad.abs().max() > 0


# ---- training configs: method.preset and its weight decay ----------------------------------------
def test_training_config_preset_reaches_the_model_and_the_optimizer():
    from probelab.train.config import OFFICIAL_WEIGHT_DECAY, load_config
    from probelab.train.methods import apply_method

    cfg = load_config(None, ["method.preset=official", "method.interpolation=dlerp", "method.num_expanded=2"])
    assert cfg.train.weight_decay == OFFICIAL_WEIGHT_DECAY == 1e-2
    model = apply_method(tiny_llama(), cfg.method)
    assert model.expansion.preset == "official" and model.expansion.gate_init == "random"
    assert not model.control_layers[0].interpolator.gate.bias.requires_grad
    explicit = load_config(None, ["method.preset=official", "train.weight_decay=0"])
    assert explicit.train.weight_decay == 0.0
    assert load_config(None, []).train.weight_decay == 0.0
    one_knob = load_config(None, ["method.preset=official", "method.freeze_interpolator=false", "method.num_expanded=2"])
    model = apply_method(tiny_llama(), one_knob.method)
    assert model.expansion.freeze_interpolator is False and model.expansion.gate_init == "random"
    with pytest.raises(ProbelabError, match="method.preset"):
        load_config(None, ["method.preset=paper"])


def test_gpu_table1_config_is_lerp16_mse():
    """Table 1's Control LLM row is Table 5's Lerp16-MSE (16 expanded blocks), with the official defaults."""
    from probelab.models.control import ExpansionConfig
    from probelab.resources import training_config
    from probelab.train.config import load_config

    path = training_config("gpu-llama3.1-8b-openmath2")
    cfg = load_config(path)
    m = cfg.method
    name = ExpansionConfig(interpolation=m.interpolation, num_expanded=m.num_expanded, divergence=m.divergence,
                           alpha=m.alpha, preset=m.preset).name
    assert name == "Lerp16-MSE" and "Lerp16-MSE" in path.read_text() and "Lerp8" not in path.read_text()
    assert ExpansionConfig(num_expanded=16).resolve(32).layers == list(range(1, 32, 2))
    assert m.preset == "official" and cfg.train.weight_decay == 1e-2


def test_docs_preset_example_runs():
    import doctest
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "control_llm.md"
    result = doctest.testfile(str(doc), module_relative=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0
