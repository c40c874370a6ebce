"""Quick concept labels first (seconds), full ones once built; the label build says what it does."""
from __future__ import annotations

import pytest

from probelab.models.tiny import tiny_llama, tiny_tokenizer
from probelab.sae import labels as L
from probelab.sae.tiny import tiny_sae


@pytest.fixture()
def parts(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path))
    return tiny_llama(), tiny_tokenizer(), tiny_sae()


def test_quick_labels_first_then_the_full_ones(parts, capsys):
    model, tok, sae = parts
    quick = L.display_labels(model, tok, sae, progress=True)
    err = capsys.readouterr().err
    assert "building concept labels for 128 SAE latents from 40 held-out intros" in err
    assert quick.meta["quick"] is True and quick.meta["n_texts"] == L.QUICK_TEXTS and len(quick) == 128
    note = L.quick_note(quick)
    assert note and "probelab sae labels default" in note and str(L.FULL_TEXTS) in note
    # cached: the second call builds nothing
    again = L.display_labels(model, tok, sae, progress=True)
    assert capsys.readouterr().err == "" and [x.label for x in again.infos] == [x.label for x in quick.infos]

    full = L.concept_labels(model, tok, sae)  # what `probelab sae labels` builds
    shown = L.display_labels(model, tok, sae)
    assert not shown.meta.get("quick") and shown.meta["n_texts"] == L.FULL_TEXTS and L.quick_note(shown) is None
    assert [x.label for x in shown.infos] == [x.label for x in full.infos]
    assert shown.meta["n_tokens"] > quick.meta["n_tokens"]


def test_quick_labels_are_the_full_recipe_on_fewer_texts(parts):
    model, tok, sae = parts
    quick = L.display_labels(model, tok, sae)
    direct = L.concept_labels(model, tok, sae, texts=L._label_texts(L.QUICK_TEXTS), cache=False)
    assert [(x.label, x.frequency, x.contexts) for x in quick.infos] == \
        [(x.label, x.frequency, x.contexts) for x in direct.infos]


def test_length_sorted_batches_give_the_states_of_one_text_at_a_time(parts):
    from probelab.sae.evaluate import site_states

    model, tok, _ = parts
    texts = L._label_texts(20)
    batched = L._states_by_length(model, tok, texts, 2, 256, False, "x")
    single = [site_states(model, tok, [t], 2, skip_first=False)[0] for t in texts]
    for a, b in zip(batched, single):
        assert a.shape == b.shape
        assert (a - b).abs().max() < 1e-4
