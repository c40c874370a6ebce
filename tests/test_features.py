"""SAE feature dashboards: brute-force checks on a tiny model + SAE, the cache, the offline HTML, the CLI."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from probelab.cli import main
from probelab.errors import ProbelabError
from probelab.models.tiny import tiny_llama, tiny_tokenizer
from probelab.sae.density import DENSE_THRESHOLD, latent_density
from probelab.sae.evaluate import sink_mask
from probelab.sae.features import feature_store, latent_html
from probelab.sae.tiny import tiny_sae

TEXTS = ["The cat sat on the mat.", "Paris is the capital of France.", "abc abc abc", "hello world, hello!",
         "A quick brown fox jumps over the lazy dog."]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def parts():
    model, tok, sae = tiny_llama(), tiny_tokenizer(), tiny_sae(k=8)
    return model, tok, sae, feature_store(model, tok, sae, texts=TEXTS, cache=False)


def all_activations(model, tok, sae):
    """Brute force: ``{(text, position): z [d_sae]}`` for every non-sink token."""
    out = {}
    for ti, text in enumerate(TEXTS):
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            h = model(input_ids=ids, output_hidden_states=True).hidden_states[2][0]
            z = sae.encode(h)
        for p in torch.nonzero(sink_mask(h)).flatten().tolist():
            out[(ti, p)] = z[p]
    return out


def test_store_matches_brute_force(parts):
    model, tok, sae, store = parts
    acts = all_activations(model, tok, sae)
    z = torch.stack(list(acts.values()))
    assert store.n_tokens == len(acts)
    assert np.array_equal(store.counts, (z != 0).sum(0).numpy())
    assert np.array_equal(store.counts, latent_density(model, tok, sae, texts=TEXTS, cache=False).counts)
    keys = list(acts)
    for i in [int(store.counts.argmax()), int(np.argsort(store.counts)[len(store.counts) // 2])]:
        d = store.latent(i, n_top=3)
        col = z[:, i]
        assert d["count"] == int((col != 0).sum()) and d["density"] == pytest.approx(d["count"] / len(acts))
        assert d["dense"] == (d["density"] > DENSE_THRESHOLD)
        if d["count"] == 0:
            assert d["dead"] and d["top"] == [] and d["histogram"]["counts"] == []
            continue
        assert d["top"][0]["act"] == pytest.approx(float(col.max()), abs=1e-4)
        assert [c["act"] for c in d["top"]] == sorted((c["act"] for c in d["top"]), reverse=True)
        best = keys[int(col.argmax())]
        assert (d["top"][0]["text"], d["top"][0]["position"]) == best
        c = d["top"][0]
        ids = tok(TEXTS[best[0]])["input_ids"]
        assert c["token"] == tok.decode([ids[best[1]]])
        assert c["left"] == "".join(tok.decode([t]) for t in ids[max(0, best[1] - 10):best[1]])
        assert c["right"] == "".join(tok.decode([t]) for t in ids[best[1] + 1:best[1] + 11])
        assert c["window"][c["focus"]]["act"] == c["act"]
        assert sum(d["histogram"]["counts"]) == d["count"]
        # quantile examples: strongest range first, every example inside its range
        ranges = [q["range"] for q in d["quantiles"]]
        assert ranges == sorted(ranges, reverse=True) and ranges[0][1] == pytest.approx(c["act"], abs=1e-4)
        for q in d["quantiles"]:
            assert all(q["range"][0] - 1e-4 <= e["act"] <= q["range"][1] + 1e-4 for e in q["examples"])


def test_promoted_and_suppressed_tokens_are_the_decoder_direction_through_the_unembedding(parts):
    model, tok, sae, store = parts
    i = 5
    with torch.no_grad():
        logits = model.lm_head.weight @ (model.model.norm.weight * sae.W_dec[i])
    d = store.latent(i)
    assert [x["token"] for x in d["promoted"][:3]] == [tok.decode([int(t)]) for t in logits.topk(3).indices]
    assert [x["token"] for x in d["suppressed"][:3]] == [tok.decode([int(t)]) for t in (-logits).topk(3).indices]
    assert d["promoted"][0]["value"] == pytest.approx(float(logits.max()), abs=1e-4)
    assert d["suppressed"][0]["value"] == pytest.approx(float(logits.min()), abs=1e-4)


def test_labels_search_and_density_filter(parts):
    model, tok, sae, store = parts
    from probelab.sae.labels import concept_labels

    labels = concept_labels(model, tok, sae, texts=TEXTS, cache=False)
    assert [store.label(i) for i in range(store.d_sae)] == [labels.label(i) for i in range(store.d_sae)]
    live = int(store.counts.argmax())
    word = store.latent(live)["top_tokens"][0]
    hits = store.search(word)
    assert live in [h["latent"] for h in hits] and all(word.lower() in json.dumps(h).lower() for h in hits)
    lo = store.search(word, max_density=0.05)
    assert all(h["density"] <= 0.05 for h in lo)
    with pytest.raises(ProbelabError, match="unknown latent 999"):
        store.latent(999)
    with pytest.raises(ProbelabError, match="empty"):
        store.search(" ")


def test_store_is_cached_by_sae_and_model_content(tmp_path):
    model, tok, sae = tiny_llama(), tiny_tokenizer(), tiny_sae()
    a = feature_store(model, tok, sae, texts=TEXTS)
    folder = tmp_path / "cache" / "sae_features"
    assert len(list(folder.glob("store-*.safetensors"))) == 1
    b = feature_store(model, tok, sae, texts=TEXTS)  # read back
    assert np.array_equal(a.values, b.values) and a.meta == b.meta
    with torch.no_grad():  # the same model object with new weights is a different model
        for p in model.model.layers[0].parameters():
            p.add_(0.2 * torch.randn_like(p))
    c = feature_store(model, tok, sae, texts=TEXTS)
    assert len(list(folder.glob("store-*.safetensors"))) == 2 and not np.array_equal(a.counts, c.counts)
    feature_store(model, tok, tiny_sae(seed=4), texts=TEXTS)
    assert len(list(folder.glob("store-*.safetensors"))) == 3


def test_a_model_replaced_in_its_folder_is_scanned_again(tmp_path):
    from probelab.models import load_model
    from probelab.models.loading import save_hf_folder

    folder = tmp_path / "m"
    save_hf_folder(tiny_llama(), folder, tiny_tokenizer())
    model, tok = load_model(str(folder))
    a = feature_store(model, tok, tiny_sae(), texts=TEXTS)
    save_hf_folder(tiny_llama(seed=5), folder, tiny_tokenizer())  # same path, new weights
    model, tok = load_model(str(folder))
    b = feature_store(model, tok, tiny_sae(), texts=TEXTS)
    assert a.meta["key"] != b.meta["key"] and not np.array_equal(a.values, b.values)
    assert len(list((tmp_path / "cache" / "sae_features").glob("store-*.safetensors"))) == 2


def test_html_is_self_contained_with_every_part(parts):
    *_, store = parts
    i = int(store.counts.argmax())
    page = latent_html(store.latent(i), "tiny:")
    for part in ("Activation histogram", "<svg", "<rect", "Top-activating contexts", "Examples across activation ranges",
                 "promoted", "suppressed", "density", 'class="focus"', store.label(i).split("|")[0]):
        assert part in page, part
    assert "dense: fires on more than 10%" in page  # this tiny SAE's top latent fires almost everywhere
    assert not re.search(r"<script", page, re.I) and not re.search(r"<link", page, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page, re.I)
    dead = int(np.flatnonzero(store.counts == 0)[0])
    assert "dead: never fired" in latent_html(store.latent(dead))


# ---- CLI ----------------------------------------------------------------------------------------
def run_cli(args, capsys):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_writes_offline_html_and_json(tmp_path, capsys):
    out = tmp_path / "feat"
    code, printed, err = run_cli(["features", "--sae", "tiny", "--latent", 3, "--latent", 4, "--out", out,
                                  "--n-texts", 12, "--device", "cpu"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        ["index.html", "latent-3.html", "latent-3.json", "latent-4.html", "latent-4.json"]
    page = (out / "latent-4.html").read_text()
    assert "Latent 4" in page and "<svg" in page and not re.search(r"<script", page, re.I)
    assert json.loads((out / "latent-4.json").read_text())["latent"] == 4
    assert "latent-3.html" in (out / "index.html").read_text() and "wrote 2 dashboard(s)" in printed
    # probelab's own output folder is replaced; a folder of the user's is refused without --overwrite
    code, _, err = run_cli(["features", "--sae", "tiny", "--latent", 3, "--out", out, "--n-texts", 12], capsys)
    assert code == 0, err
    assert not (out / "latent-4.html").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, _, err = run_cli(["features", "--sae", "tiny", "--latent", 3, "--out", mine, "--n-texts", 12], capsys)
    assert code == 1 and err.startswith("error:") and (mine / "notes.txt").read_text() == "keep"


def test_cli_search_json(capsys):
    code, printed, err = run_cli(["features", "--sae", "tiny", "--search", "e", "--json", "--n-texts", 12,
                                  "--limit", 3], capsys)
    assert code == 0, err
    d = json.loads(printed)
    assert d["d_sae"] == 128 and len(d["search"]["latents"]) <= 3 and d["search"]["n_matches"] >= 1


@pytest.mark.parametrize("args, message", [
    ([], "give --latent N"),
    (["--out", "x"], "--out writes latent dashboards"),
    (["--latent", "500"], "unknown latent 500"),
    (["--search", "a", "--min-density", "0.5", "--max-density", "0.1"], "--min-density"),
])
def test_cli_bad_input_is_one_line(capsys, args, message):
    code, _, err = run_cli(["features", "--sae", "tiny", "--n-texts", 3, *args], capsys)
    assert code == 1 and err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1
