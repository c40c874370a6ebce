"""Capture equals HF ``output_hidden_states`` of unpadded single-text runs, for both padding sides."""
import pytest
import torch

import probelab
from probelab.capture import Captures
from probelab.errors import CaptureError

TEXTS = ["king is to queen", "a", "the man is to the woman, and more!", "Paris is to France"]


def reference(model, tok, text):
    """Unpadded single-text forward: hidden_states [L+1, T, d] with the last entry taken pre-norm."""
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    hs = torch.stack(out.hidden_states)[:, 0].clone()
    return ids[0], hs


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("select", ["last", "mean", "all"])
def test_capture_matches_output_hidden_states(tiny, side, select):
    model, tok = tiny
    tok.padding_side = side
    caps = probelab.capture(model, tok, TEXTS, select=select, batch_size=3)
    n_layers = model.config.num_hidden_layers
    assert caps.layers["resid"] == list(range(n_layers + 1))
    for i, text in enumerate(TEXTS):
        ids, hs = reference(model, tok, text)
        if select == "last":
            ref, got = hs[:, -1], caps.stream()[:, i]
        elif select == "mean":
            ref, got = hs[:, 1:].mean(1), caps.stream()[:, i]  # BOS (position 0) excluded
        else:
            ref, got = hs, caps.stream()[i]
            assert caps.tokens[i] == tok.convert_ids_to_tokens(ids.tolist())
        # layers 0..L-1 are HF hidden_states exactly; HF applies the final norm to its last entry,
        # probelab keeps the raw block output, so norm(captured) must equal HF's last entry.
        assert torch.allclose(got[:-1], ref[:-1], atol=1e-5)
        final = model.model.norm(got[-1:]) if select != "mean" else None
        if final is not None:
            assert torch.allclose(final, ref[-1:], atol=1e-5)


def test_last_layer_is_pre_norm_block_output(tiny):
    model, tok = tiny
    caps = probelab.capture(model, tok, TEXTS[:1], select="all")
    ids = tok(TEXTS[0], return_tensors="pt").input_ids
    seen = {}
    h = model.model.layers[-1].register_forward_hook(lambda m, a, o: seen.setdefault("x", o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        model(ids)
    h.remove()
    assert torch.allclose(caps.stream()[0][-1], seen["x"][0], atol=1e-6)


def test_padding_does_not_change_states(tiny):
    """Batching with much longer texts (lots of padding) gives the same states as alone."""
    model, tok = tiny
    tok.padding_side = "left"
    alone = probelab.capture(model, tok, ["short one"], select="last").stream()[:, 0]
    batch = probelab.capture(model, tok, ["short one", "x " * 60], select="last").stream()[:, 0]
    assert torch.allclose(alone, batch, atol=1e-5)


def test_second_architecture_qwen2(tiny_qwen):
    model, tok = tiny_qwen
    caps = probelab.capture(model, tok, TEXTS, select="last")
    for i, text in enumerate(TEXTS):
        _, hs = reference(model, tok, text)
        assert torch.allclose(caps.stream()[:-1, i], hs[:-1, -1], atol=1e-5)


@pytest.mark.parametrize("select", ["last", "mean", "all"])
def test_transformer_lens_backend_agrees(tiny, select):
    model, tok = tiny
    a = probelab.capture(model, tok, TEXTS, select=select)
    b = probelab.capture(model, tok, TEXTS, select=select, backend="transformer-lens")
    assert b.layers == a.layers
    if select == "all":
        for x, y in zip(a.stream(), b.stream()):
            assert torch.allclose(x, y, atol=1e-5)
    else:
        assert torch.allclose(a.stream(), b.stream(), atol=1e-5)
    assert b.meta["hook_names"][1] == "blocks.0.hook_resid_post"


@pytest.mark.parametrize("select", ["last", "all"])
def test_save_load_round_trip(tiny, tmp_path, select):
    model, tok = tiny
    caps = probelab.capture(model, tok, TEXTS, select=select)
    caps.save(tmp_path / "c")
    back = Captures.load(tmp_path / "c")
    assert back.texts == caps.texts and back.tokens == caps.tokens and back.layers == caps.layers
    if select == "all":
        assert all(torch.equal(x, y) for x, y in zip(back.stream(), caps.stream()))
    else:
        assert torch.equal(back.stream(), caps.stream())
        assert torch.equal(back.layer(2), caps.stream()[2])


def test_bad_requests(tiny):
    model, tok = tiny
    with pytest.raises(CaptureError, match="empty"):
        probelab.capture(model, tok, [])
    with pytest.raises(CaptureError, match="non-empty"):
        probelab.capture(model, tok, ["ok", "  "])
    with pytest.raises(CaptureError, match="selection"):
        probelab.capture(model, tok, ["ok"], select="first")
    with pytest.raises(CaptureError, match="backend"):
        probelab.capture(model, tok, ["ok"], backend="nope")
    caps = probelab.capture(model, tok, ["ok", "fine"])
    with pytest.raises(CaptureError, match="no layer 99"):
        caps.layer(99)
    with pytest.raises(CaptureError, match="no stream"):
        caps.stream("expanded")


def test_recordable_model_extra_streams(tiny):
    """A model implementing attach_recorder gets its extra streams captured in the same pass."""
    import contextlib

    model, tok = tiny

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config
            self.model = inner.model
            self._rec = None

        @contextlib.contextmanager
        def attach_recorder(self, rec):
            self._rec = rec
            h = self.inner.model.layers[1].register_forward_hook(
                lambda m, a, o: self._rec.put("double", 2, 2 * (o[0] if isinstance(o, tuple) else o)))
            try:
                yield
            finally:
                h.remove()
                self._rec = None

        def forward(self, **kw):
            return self.inner(**kw)

    caps = probelab.capture(Wrapped(model), tok, TEXTS, select="last")
    assert caps.layers["double"] == [2]
    assert torch.allclose(caps.layer(2, "double"), 2 * caps.layer(2, "resid"))
