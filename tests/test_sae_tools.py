"""Concept labels, per-token inspection, selection-by-ablation, training and the CLI, on tiny models."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from probelab.cli import main
from probelab.errors import ProbelabError
from probelab.models.tiny import tiny_llama, tiny_tokenizer
from probelab.sae import load_sae
from probelab.sae.evaluate import sae_quality, site_states
from probelab.sae.inspect import inspect_text
from probelab.sae.labels import ConceptLabels, concept_labels, promoted_tokens
from probelab.sae.selection import compare_selection
from probelab.sae.tiny import tiny_sae

TEXTS = ["the cat sat on the mat", "a dog barked at the cat", "numbers 1 2 3 4", "hello world"]


@pytest.fixture(scope="module")
def parts():
    return tiny_llama(), tiny_tokenizer(), tiny_sae()


def test_labels_point_at_real_firing_tokens(parts, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path))
    model, tok, sae = parts
    labels = concept_labels(model, tok, sae, texts=TEXTS, cache=True)
    assert len(labels) == sae.cfg.d_sae
    states = site_states(model, tok, TEXTS, 2, skip_first=True)
    fired = torch.cat([sae.encode(h) for h in states])
    for i, info in enumerate(labels.infos):
        freq = (fired[:, i] != 0).float().mean().item()
        assert info.frequency == pytest.approx(freq)
        assert (info.label == "(dead)") == (freq == 0)
        acts = [c["act"] for c in info.contexts]
        assert acts == sorted(acts, reverse=True)
        if acts:
            assert acts[0] == pytest.approx(fired[:, i].max().item(), abs=1e-4)
            assert all("[[" in c["text"] for c in info.contexts)
    cached = list((tmp_path / "concept_labels").glob("*.json"))
    assert len(cached) == 1
    again = concept_labels(model, tok, sae, texts=TEXTS, cache=True)
    assert [x.label for x in again.infos] == [x.label for x in labels.infos]
    assert ConceptLabels.load(cached[0]).infos[3] == labels.infos[3]


def test_promoted_tokens_follow_the_unembedding(parts):
    model, tok, sae = parts
    promoted = promoted_tokens(model, tok, sae, n=3)
    direction = sae.W_dec[5] * model.model.norm.weight
    best = (model.get_output_embeddings().weight @ direction).argmax().item()
    assert promoted[5][0] == tok.decode([best]).replace("\n", "\\n")


def test_inspect_text_rows_and_truncation(parts):
    model, tok, sae = parts
    out = inspect_text(model, tok, sae, "abc", top=2)
    assert out["n_tokens"] == 4 and len(out["tokens"]) == 4 and not out["truncated"]
    row = out["tokens"][1]
    assert len(row["by_activation"]) == 2 and len(row["by_attribution"]) == 2
    assert out["tokens"][-1]["loss"] is None  # the last token predicts nothing
    vals = [c["value"] for c in row["by_activation"]]
    assert vals == sorted(vals, reverse=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        long = inspect_text(model, tok, sae, "x" * 50, max_tokens=10)
    assert long["truncated"] and long["n_tokens"] == 10
    assert any("truncated to the first 10" in str(w.message) for w in caught)
    with pytest.raises(ProbelabError, match="empty"):
        inspect_text(model, tok, sae, "   ")


def test_selection_rules_follow_first_order_sign(parts):
    model, tok, sae = parts
    res = compare_selection(model, tok, sae, TEXTS, k=2, progress=False)
    d = res.delta()
    assert set(d) == {"activation", "attribution", "-attribution", "|attribution|", "random"}
    # removing latents with the largest positive score lowers the loss; the most negative raise it
    assert d["attribution"] < d["-attribution"]
    assert res.n_tokens == sum(len(t) for t in TEXTS)  # byte tokens + BOS, minus the last: one per char


def test_quality_numbers_on_exact_reconstruction():
    sae = tiny_sae(d_in=8, d_sae=8, k=8)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(8))
        sae.W_dec.copy_(torch.eye(8))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    x = torch.rand(50, 8) + 0.1  # positive: the ReLU of TopK keeps everything
    q = sae_quality(sae, [x[:20], x[20:]])
    assert q.explained_variance == pytest.approx(1.0) and q.nmse == pytest.approx(0.0, abs=1e-12)
    assert q.l0 == 8 and q.dead_fraction == 0 and q.n_tokens == 50 and q.n_texts == 2


def test_tiny_training_run_writes_a_loadable_sae(tmp_path):
    from probelab.sae.train import SAETrainConfig, read_meta, train_sae

    cfg = SAETrainConfig(model="tiny-llama", layer=2, d_sae=64, k=4, cache_tokens=1500, training_tokens=2048, batch_tokens=128,
                         context_size=32, store_batch_prompts=4, n_batches_in_buffer=8,
                         n_batches_for_norm_estimate=1, n_eval_texts=4, lr_warm_up_steps=1)
    sae = train_sae(cfg, tmp_path / "sae", progress=False)
    assert sae.cfg.metadata.hook_name == "model.layers.1" and sae.cfg.d_sae == 64
    meta = read_meta(tmp_path / "sae")
    assert meta["resid_index"] == 2 and 0 <= meta["heldout_quality"]["dead_fraction"] <= 1
    assert meta["heldout_quality"]["l0"] <= 4
    from probelab.models.devices import use_bf16

    assert meta["config"]["autocast_lm"] == "auto" and meta["lm_bf16"] is use_bf16("auto", "cpu")  # resolved here
    assert load_sae(tmp_path / "sae").cfg.normalize_activations == "none"  # scaling folded into the weights


def run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_cli_concepts_json_and_errors(tmp_path, capsys):
    tiny_sae().save_model(tmp_path / "s")
    assert run_cli(["concepts", "--model", "tiny-llama", "--sae", str(tmp_path / "s"), "--no-labels", "--json", "hey"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["token"] for r in out["tokens"]] == ["<|bos|>", "h", "e", "y"]
    tiny_sae(d_in=32).save_model(tmp_path / "narrow")
    code = run_cli(["concepts", "--model", "tiny-llama", "--sae", str(tmp_path / "narrow"), "--no-labels", "hey"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: SAE width mismatch") and "\n" not in err
    code = run_cli(["concepts", "--model", "tiny-llama", "--sae", str(tmp_path / "s"), "--no-labels", ""])
    assert code == 1 and capsys.readouterr().err.strip() == "error: the text is empty"
    assert run_cli(["concepts", "--model", "tiny-llama", "--sae", str(tmp_path / "s"), "--no-labels", "--json",
                    "--max-tokens", "3", "hello"]) == 0
    captured = capsys.readouterr()
    assert "warning: text has 6 tokens; truncated to the first 3" in captured.err
    assert json.loads(captured.out)["n_tokens"] == 3


def test_cli_sae_info(tmp_path, capsys):
    tiny_sae(hook_name="model.layers.2").save_model(tmp_path / "s")
    assert run_cli(["sae", "info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "model.layers.2" in out and "topk" in out


def test_sink_mask_drops_first_token_and_norm_outliers():
    from probelab.sae.evaluate import sink_mask

    h = torch.ones(6, 4)
    h[0] *= 200.0   # the usual sink at position 0
    h[2] *= 150.0   # a sink that moved to a later token
    h[4] *= 3.0     # large but ordinary
    assert sink_mask(h).tolist() == [False, True, False, True, True, True]
    assert sink_mask(torch.ones(1, 4)).tolist() == [False]


def test_inspect_marks_the_attention_sink_on_smollm2(smollm2):
    model, tok = smollm2
    out = inspect_text(model, tok, tiny_sae(d_in=576, d_sae=64, k=4, hook_name="model.layers.12"),
                       "Paris is a city.", top=1)
    assert [r["sink"] for r in out["tokens"]] == [True] + [False] * (out["n_tokens"] - 1)
