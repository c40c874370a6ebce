"""Device and dtype everywhere: bf16 end to end, the dtype/device of what each API returns, a model
sharded with a device_map, early-stopped and streamed captures, the mean rule.

Every model test is parametrised over the devices this machine has: ``cpu`` always, ``cuda`` when
CUDA is available (skipped otherwise), so the same assertions run on a GPU machine
(``bench/gpu_check.sh`` runs them there).

Tolerances (bf16 has an 8-bit mantissa, relative step 2**-8 = 0.4%): a tiny random model's states
in bf16 match fp32 to a relative norm error below 5% at every layer and a cosine above 0.99;
alignment metrics computed from bf16 states match fp32 within 0.02 (cosines) .
"""
from __future__ import annotations

import pytest
import torch

import probelab
from probelab.capture import Captures, ShardedStates, mean_keep
from probelab.errors import CaptureError, ProbelabError
from probelab.models.devices import input_device, model_dtype, resolve_device, resolve_dtype
from probelab.models.loading import place_model
from probelab.models.tiny import tiny_llama, tiny_tokenizer

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device"))]
TEXTS = ["king is to queen", "a", "the man is to the woman, and more!", "Paris is to France", "x y z w v u"]
REL_BF16 = 0.05   # relative norm error of a bf16 state vs fp32, tiny random model
COS_BF16 = 0.99


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def _tiny(device: str, dtype=torch.float32):
    return place_model(tiny_llama().to(dtype), device), tiny_tokenizer()


# ---- resolve_device / resolve_dtype ----------------------------------------------------------
def test_auto_rules_on_this_machine():
    dev = resolve_device("auto")
    assert dev.type == ("cuda" if HAS_CUDA else "mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_dtype("auto", "cpu") == torch.float32
    if HAS_CUDA:
        assert resolve_dtype("auto", "cuda") in (torch.bfloat16, torch.float16)


@pytest.mark.parametrize("name,dtype", [("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16), ("BF16", torch.bfloat16),
                                        ("float16", torch.float16), ("fp16", torch.float16), ("float32", torch.float32),
                                        ("fp32", torch.float32), ("torch.bfloat16", torch.bfloat16),
                                        (torch.float16, torch.float16)])
def test_dtype_names(name, dtype):
    assert resolve_dtype(name, "cpu") is dtype


@pytest.mark.parametrize("bad,match", [("int8", "unknown dtype 'int8'"), (torch.int64, "unsupported model dtype")])
def test_bad_dtype_is_one_line(bad, match):
    with pytest.raises(ProbelabError, match=match) as e:
        resolve_dtype(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad,match", [("gpu", "unknown device 'gpu'"), ("tpu", "unknown device|unsupported device"),
                                       ("cuda:99", "CUDA")])
def test_bad_device_is_one_line(bad, match):
    if bad == "cuda:99" and HAS_CUDA:
        match = "CUDA device"
    with pytest.raises(ProbelabError, match=match) as e:
        resolve_device(bad)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cuda_without_cuda_says_so():
    with pytest.raises(ProbelabError, match="CUDA is not available"):
        probelab.load_model("tiny-llama", device="cuda")


# ---- load_model ------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, "bfloat16", "float16", "float32"])
def test_load_model_dtype_and_device(device, dtype):
    model, _ = probelab.load_model("tiny-llama", device=device, dtype=dtype)
    want = resolve_dtype(dtype)
    assert {p.dtype for p in model.parameters()} == {want}
    assert {p.device.type for p in model.parameters()} == {device}
    assert input_device(model).type == device and model_dtype(model) == want


@pytest.mark.parametrize("device", DEVICES)
def test_load_folder_bf16(tmp_path, device):
    tiny_llama().save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    model, _ = probelab.load_model(tmp_path / "m", device=device, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.parameters()} == {device}


def test_load_model_explicit_device_map(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    model, _ = probelab.load_model(tmp_path / "m", device_map={"": "cpu"}, dtype="float32")
    assert input_device(model).type == "cpu"
    with pytest.raises(ProbelabError, match="unknown device_map 'everywhere'"):
        probelab.load_model(tmp_path / "m", device_map="everywhere")


# ---- capture: dtype/device of what comes back, bf16 vs fp32 -----------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("select", ["last", "mean", "all"])
def test_capture_returns_float32_cpu(device, select):
    model, tok = _tiny(device, torch.bfloat16)
    caps = probelab.capture(model, tok, TEXTS, select=select, batch_size=2)
    for s in caps.streams:
        for t in (caps.stream(s) if select == "all" else [caps.stream(s)]):
            assert t.dtype == torch.float32 and t.device.type == "cpu"
    assert caps.meta["model_dtype"] == "bfloat16" and caps.meta["device"].startswith(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("select", ["last", "mean", "all"])
def test_capture_bf16_matches_fp32(device, select):
    f32, tok = _tiny(device)
    b16, _ = _tiny(device, torch.bfloat16)
    a = probelab.capture(f32, tok, TEXTS, select=select, batch_size=2)
    b = probelab.capture(b16, tok, TEXTS, select=select, batch_size=2)
    pairs = zip(a.stream(), b.stream()) if select == "all" else [(a.stream(), b.stream())]
    for x, y in pairs:
        for layer in range(x.shape[0]):
            assert rel_err(y[layer], x[layer]) < REL_BF16
            cos = torch.nn.functional.cosine_similarity(y[layer].reshape(-1, x.shape[-1]), x[layer].reshape(-1, x.shape[-1]))
            assert cos.min() > COS_BF16


# ---- a model sharded with a device_map --------------------------------------------------------
def _split_map(n_layers: int) -> dict:
    """Two CPU "devices" entries per half: accelerate treats every entry as its own placement."""
    dm = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    dm.update({f"model.layers.{i}": "cpu" for i in range(n_layers)})
    return dm


@pytest.mark.parametrize("select", ["last", "mean", "all"])
def test_device_map_sharded_model_captures_the_same_states(select):
    model, tok = tiny_llama(), tiny_tokenizer()
    ref = probelab.capture(model, tok, TEXTS, select=select, batch_size=2)
    sharded = place_model(tiny_llama(), device_map=_split_map(model.config.num_hidden_layers))
    assert hasattr(sharded.model.layers[0], "_hf_hook")  # accelerate's device hooks are in place
    got = probelab.capture(sharded, tok, TEXTS, select=select, batch_size=2)
    pairs = zip(ref.stream(), got.stream()) if select == "all" else [(ref.stream(), got.stream())]
    for x, y in pairs:
        assert torch.equal(x, y)


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_device_map_cpu_and_cuda_split():
    model, tok = tiny_llama(), tiny_tokenizer()
    ref = probelab.capture(model, tok, TEXTS, select="last")
    dm = _split_map(model.config.num_hidden_layers)
    dm.update({"model.layers.2": "cuda:0", "model.layers.3": "cuda:0", "model.norm": "cuda:0", "lm_head": "cuda:0"})
    got = probelab.capture(place_model(tiny_llama(), device_map=dm), tok, TEXTS, select="last")
    assert torch.allclose(ref.stream(), got.stream(), atol=1e-4)


def test_auto_device_map_on_this_machine():
    model = place_model(tiny_llama(), device_map="auto")
    tok = tiny_tokenizer()
    got = probelab.capture(model, tok, TEXTS[:2], select="last")
    ref = probelab.capture(tiny_llama(), tok, TEXTS[:2], select="last")
    assert torch.allclose(ref.stream(), got.stream(), atol=1e-4)


# ---- only some layers: the forward pass stops early ------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_layers_subset_equals_full_and_stops_early(device):
    model, tok = _tiny(device)
    full = probelab.capture(model, tok, TEXTS, select="all")
    ran = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, b in enumerate(model.model.layers)]
    head = model.lm_head.register_forward_hook(lambda *a: ran.append("head"))
    try:
        part = probelab.capture(model, tok, TEXTS, select="all", layers=[0, 2])
    finally:
        for h in handles + [head]:
            h.remove()
    assert part.layers == {"resid": [0, 2]}
    assert set(ran) == {0, 1}  # blocks 2, 3 and the LM head never ran
    for x, y in zip(full.stream(), part.stream()):
        assert torch.equal(x[[0, 2]], y)


def test_layers_negative_and_errors(tiny):
    model, tok = tiny
    caps = probelab.capture(model, tok, TEXTS[:2], select="last", layers=[-1])
    assert caps.layers == {"resid": [4]}
    with pytest.raises(CaptureError, match="layer 9 out of range.*0..4"):
        probelab.capture(model, tok, TEXTS[:2], layers=[9])
    with pytest.raises(CaptureError, match="layers is empty"):
        probelab.capture(model, tok, TEXTS[:2], layers=[])


# ---- long corpora: states stream to shards on disk --------------------------------------------
@pytest.mark.parametrize("select", ["last", "all"])
def test_capture_out_streams_to_shards(tmp_path, tiny, select):
    model, tok = tiny
    texts = [f"text number {i} " + "abc " * (i % 7) for i in range(40)]
    ref = probelab.capture(model, tok, texts, select=select, batch_size=8)
    got = probelab.capture(model, tok, texts, select=select, batch_size=8, out=tmp_path / "c",
                           shard_bytes=40_000 if select == "all" else 10_000)
    shards = sorted(p.name for p in (tmp_path / "c").glob("states-*.safetensors"))
    assert len(shards) > 2
    if select == "all":
        assert isinstance(got.stream(), ShardedStates) and len(got.stream()) == 40
        for i in (0, 17, 39, -1):
            assert torch.equal(got.stream()[i], ref.stream()[i])
    else:
        assert torch.equal(got.stream(), ref.stream())
    again = Captures.load(tmp_path / "c")
    assert again.tokens == ref.tokens
    got.save(tmp_path / "copy")  # a lazy capture saves (one shard: the plain layout)
    copy = Captures.load(tmp_path / "copy")
    assert (tmp_path / "copy" / "states.safetensors").is_file()
    if select == "all":
        assert torch.equal(copy.stream()[5], ref.stream()[5])
    else:
        assert torch.equal(copy.stream(), ref.stream())


def test_shard_writer_holds_at_most_one_shard(tmp_path, tiny, monkeypatch):
    """Memory bound: what the writer holds never exceeds one shard plus one batch."""
    from probelab.capture import container

    model, tok = tiny
    peak = []
    real_add = container.ShardWriter.add

    def add(self, batch, n):
        real_add(self, batch, n)
        peak.append(self.pending_bytes)

    monkeypatch.setattr(container.ShardWriter, "add", add)
    texts = ["word " * 20] * 64
    probelab.capture(model, tok, texts, select="all", batch_size=4, out=tmp_path / "c", shard_bytes=100_000)
    one_batch = 4 * 5 * 101 * 64 * 4  # texts x layers x tokens x d x 4 bytes
    assert max(peak) < 100_000 + one_batch


def test_truncated_shard_list_is_reported(tmp_path, tiny):
    model, tok = tiny
    probelab.capture(model, tok, TEXTS * 10, select="all", batch_size=4, out=tmp_path / "c", shard_bytes=20_000)
    next(iter(sorted((tmp_path / "c").glob("states-*.safetensors")))).unlink()
    with pytest.raises(ProbelabError, match="missing its states"):
        Captures.load(tmp_path / "c")


# ---- the mean rule ---------------------------------------------------------------------------
def test_mean_keep_rule():
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 0, 1]])
    assert mean_keep(mask).int().tolist() == [[0, 1, 1, 1], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 1]]
    assert torch.equal(mean_keep(mask, include_first=True), mask.bool())


@pytest.mark.parametrize("bos", [True, False])
@pytest.mark.parametrize("side", ["left", "right"])
def test_mean_excludes_first_token_with_or_without_bos(bos, side):
    model, tok = tiny_llama(), tiny_tokenizer()
    tok.add_bos_token = bos
    tok.padding_side = side
    caps = probelab.capture(model, tok, TEXTS, select="mean", batch_size=3)
    inc = probelab.capture(model, tok, TEXTS, select="mean", batch_size=3, include_first=True)
    for i, text in enumerate(TEXTS):
        ids = tok(text, return_tensors="pt").input_ids
        assert (ids[0, 0].item() == tok.bos_token_id) == bos
        with torch.no_grad():
            hs = torch.stack(model(ids, output_hidden_states=True).hidden_states)[:-1, 0]
        want = hs[:, 1:].mean(1) if ids.shape[1] > 1 else hs[:, 0]
        assert torch.allclose(caps.stream()[:-1, i], want, atol=1e-5)
        assert torch.allclose(inc.stream()[:-1, i], hs.mean(1), atol=1e-5)
    assert caps.meta["mean_excludes"] == "first token" and inc.meta["mean_excludes"] == "none"


# ---- bf16 end to end: align, concepts, steer, expand + generate -------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_align_bf16_matches_fp32(device):
    from probelab.analysis import run_alignment
    from probelab.models.control import expand_model

    def control(dtype):
        m = place_model(expand_model(tiny_llama(), num_expanded=2).to(dtype), device)
        with torch.no_grad():  # move the expanded branch off the pretrained one so the metrics are not trivial
            g = torch.Generator().manual_seed(1)
            for n, p in m.named_parameters():
                if ".expanded." in n and p.dim() == 2:
                    p.add_((0.02 * torch.randn(p.shape, generator=g)).to(p.dtype).to(p.device))
        return m

    tok = tiny_tokenizer()
    ref = run_alignment((control(torch.float32), tok), probes="analogies", umap=False, progress=False, use_cache=False)
    got = run_alignment((control(torch.bfloat16), tok), probes="analogies", umap=False, progress=False,
                        use_cache=False)
    assert len(ref.layer_rows) == len(got.layer_rows)
    for r, g in zip(ref.layer_rows, got.layer_rows):
        assert g["cosine"] == pytest.approx(r["cosine"], abs=0.02)
        assert g["relative_euclidean"] == pytest.approx(r["relative_euclidean"], abs=0.02)


@pytest.mark.parametrize("device", DEVICES)
def test_concepts_bf16(device):
    from probelab.sae.inspect import inspect_text
    from probelab.sae.tiny import tiny_sae

    f32, tok = _tiny(device)
    b16, _ = _tiny(device, torch.bfloat16)
    text = "the king is to the queen as the man is to"
    a = inspect_text(f32, tok, tiny_sae(), text, top=3, labels=None)
    b = inspect_text(b16, tok, tiny_sae(), text, top=3, labels=None)
    assert [r["token"] for r in a["tokens"]] == [r["token"] for r in b["tokens"]]
    # top-by-activation: the top latent agrees at most tokens (ties within bf16 noise may swap)
    same = sum(ra["by_activation"][0]["id"] == rb["by_activation"][0]["id"] for ra, rb in zip(a["tokens"], b["tokens"]))
    assert same >= 0.8 * len(a["tokens"])
    for ra, rb in zip(a["tokens"], b["tokens"]):
        va, vb = ra["by_activation"][0]["value"], rb["by_activation"][0]["value"]
        assert vb == pytest.approx(va, rel=0.1, abs=0.05)


@pytest.mark.parametrize("device", DEVICES)
def test_steer_bf16(device):
    from probelab.models.cocomix import steer_residual
    from probelab.sae.tiny import tiny_sae

    model, tok = _tiny(device, torch.bfloat16)
    sae = tiny_sae()
    ids = tok("Paris is", return_tensors="pt").input_ids.to(input_device(model))
    with torch.no_grad():
        plain = model(ids).logits
        with steer_residual(model, sae, {5: 40.0}):
            steered = model(ids).logits
        again = model(ids).logits
    assert steered.dtype == torch.bfloat16 and steered.device.type == device
    assert not torch.allclose(plain, steered)
    assert torch.equal(plain, again)  # the hook is gone
    with steer_residual(model, sae, {5: 40.0}):
        out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == (1, ids.shape[1] + 4)


@pytest.mark.parametrize("device", DEVICES)
def test_expand_and_generate_bf16(device, tmp_path):
    from probelab.models.control import expand_model, save_control

    base, tok = _tiny(device, torch.bfloat16)
    control = expand_model(base, num_expanded=2)
    assert {p.dtype for p in control.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in control.parameters()} == {device}
    ids = tok("king is to", return_tensors="pt").input_ids.to(input_device(control))
    out = control.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == (1, ids.shape[1] + 5) and out.device.type == device
    # at init the Control LLM is the base model: greedy continuations agree with a bf16 base
    ref_model, _ = _tiny(device, torch.bfloat16)
    ref = ref_model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(out, ref)
    save_control(control, tmp_path / "c", tok)
    back, _ = probelab.load_model(tmp_path / "c", device=device, dtype="bfloat16")
    assert {p.dtype for p in back.parameters()} == {torch.bfloat16}
    caps = probelab.capture(back, tok, TEXTS[:2], select="last")
    assert {"resid", "pretrained", "expanded"} <= set(caps.streams)
    assert all(caps.stream(s).dtype == torch.float32 for s in caps.streams)
