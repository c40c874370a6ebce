"""The app's helpers (probelab.app_support) without Streamlit: discovery, probes, result store, concept rows,
steering, launch command."""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

from probelab.analysis import AnalysisOptions, run_alignment
from probelab.app_support import alignment as al
from probelab.app_support import concepts as cc
from probelab.app_support import launch, sources, steering
from probelab.app_support.settings import AppSettings
from probelab.errors import ProbelabError
from probelab.models.control import ExpansionConfig, expand_model, save_control
from probelab.models.tiny import tiny_llama, tiny_tokenizer

SMALL = "\n".join(["king is to queen | man is to woman", "Paris is to France | Tokyo is to Japan",
                   "see is to saw | go is to went", "dog is to puppy | cat is to kitten"])


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path / "cache"))


def control_folder(path, scale=0.0, seed=1):
    model = expand_model(tiny_llama(), ExpansionConfig(num_expanded=2)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.control_layers:
            for p in layer.expanded.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g))
    return save_control(model, path, tiny_tokenizer())


# ---- settings and launch -------------------------------------------------------------------------
def test_settings_precedence_query_over_env_and_tiny_models_get_the_tiny_sae(tmp_path):
    s = AppSettings.from_env({"PROBELAB_APP_MODEL": "tiny-qwen2", "PROBELAB_APP_ROOTS": str(tmp_path),
                              "PROBELAB_APP_UMAP": "0"})
    assert (s.model, s.sae, s.umap) == ("tiny-qwen2", "tiny", False)
    assert s.roots[0] == tmp_path
    s = AppSettings.from_env({"PROBELAB_APP_MODEL": "tiny-qwen2"}, {"model": "smollm2-135m"})
    assert (s.model, s.sae, s.umap) == ("smollm2-135m", "default", True)


def test_launch_command_is_headless_local_and_without_telemetry():
    argv = launch.streamlit_argv(launch.app_script(), "127.0.0.1", 8600)
    opts = dict(zip(argv[5::2], argv[6::2]))
    assert argv[1:4] == ["-m", "probelab.app.server", "run"] and argv[4].endswith("probelab/app/main.py")
    assert opts["--server.headless"] == "true" and opts["--browser.gatherUsageStats"] == "false"
    assert opts["--server.address"] == "127.0.0.1" and opts["--server.port"] == "8600"
    assert launch.exposure_warning("127.0.0.1") is None and launch.exposure_warning("localhost") is None
    assert "reachable from other machines" in launch.exposure_warning("0.0.0.0")


def test_a_taken_or_invalid_port_is_a_one_line_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ProbelabError, match=f"cannot listen on 127.0.0.1:{port}"):
            launch.check_port("127.0.0.1", port)
    with pytest.raises(ProbelabError, match="out of range"):
        launch.check_port("127.0.0.1", 70000)


# ---- discovery and folder checks ------------------------------------------------------------------
def test_discover_finds_each_kind_once_newest_first_and_respects_exclude(tmp_path):
    root = tmp_path / "runs"
    for name, cfg in [("ctl", {"model_type": "llama", "expansion": {}}),
                      ("cc", {"architectures": ["CoCoMixForCausalLM"], "cocomix": {}}), ("plain", {"model_type": "llama"})]:
        (root / "a" / name).mkdir(parents=True)
        (root / "a" / name / "config.json").write_text(json.dumps(cfg))
    (root / "a" / "plain" / "inner").mkdir()  # inside a model folder: not searched
    (root / "a" / "plain" / "inner" / "config.json").write_text("{}")
    (root / "al").mkdir()
    (root / "al" / "metrics.json").write_text(json.dumps({"alignment_score": 0.5, "checkpoint": "x"}))
    (root / "bad").mkdir()
    (root / "bad" / "config.json").write_text("{not json")
    (root / "run" / "final").mkdir(parents=True)  # a training run: its config.json is not a model's
    (root / "run" / "config.json").write_text(json.dumps({"mode": "ntp", "out_dir": "runs/run"}))
    (root / "run" / "final" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    found = sources.discover([root, root])
    assert sorted((f.path.name, f.kind) for f in found) == [("al", "alignment"), ("cc", "cocomix"),
                                                          ("ctl", "control"), ("final", "model"),
                                                          ("plain", "model")]
    assert [f.mtime for f in found] == sorted((f.mtime for f in found), reverse=True)
    assert {f.path.name for f in sources.discover([root], exclude=[root / "a", root / "run"])} == {"al"}
    assert sources.describe_alignment(root / "al") == "al: x (score 0.500)"


def test_check_checkpoint_says_what_a_folder_is_not(tmp_path):
    with pytest.raises(ProbelabError, match="does not exist"):
        sources.check_checkpoint(tmp_path / "nope")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ProbelabError, match="is a file"):
        sources.check_checkpoint(f)
    with pytest.raises(ProbelabError, match="not a checkpoint folder"):
        sources.check_checkpoint(tmp_path)
    state = tmp_path / "step-000100"
    state.mkdir()
    (state / "trainable.safetensors").write_bytes(b"")
    (state / "state.json").write_text("{}")
    with pytest.raises(ProbelabError, match="training-state checkpoint"):
        sources.check_checkpoint(state)
    with pytest.raises(ProbelabError, match="no checkpoint folder given"):
        sources.check_checkpoint("  ")
    folder, kind = sources.check_checkpoint(control_folder(tmp_path / "ck"))
    assert kind == "control" and folder == tmp_path / "ck"


# ---- probes -------------------------------------------------------------------------------------
def test_pasted_probes_make_pairs_and_singles_and_reject_bad_lists():
    ps = al.probes_from_text("# comment\na | b\n\nc\n d |e ")
    assert [(p.text, p.pair_id, p.side) for p in ps.items] == [
        ("a", "pasted-2", 0), ("b", "pasted-2", 1), ("c", None, 0), ("d", "pasted-5", 0), ("e", "pasted-5", 1)]
    assert ps.pairs == [(0, 1), (3, 4)]
    for text, msg in [("", "probe list is empty"), ("\n# only a comment\n", "probe list is empty"),
                      ("one sentence", "has 1 sentence"), ("a | b | c", "line 1"), ("a |", "line 1")]:
        with pytest.raises(ProbelabError, match=msg):
            al.probes_from_text(text)


# ---- alignment store and shapes -------------------------------------------------------------------
def test_at_init_alignment_is_panel_a_and_is_stored_then_read_back_without_a_model():
    ps, opt = al.probes_from_text(SMALL), AnalysisOptions(umap=False)
    steps = []
    target = al.AtInit("tiny-llama", 2)
    res = al.align(target, ps, opt, progress=lambda f, m: steps.append(f))
    assert steps == sorted(steps) and steps[-1] == 1.0
    assert res.score == pytest.approx(1.0, abs=1e-6)
    assert [r["layer"] for r in res.layer_rows] == [2, 4]
    assert all(r["cosine"] == pytest.approx(1.0, abs=1e-6) and r["nn_retention"] == 1.0 for r in res.layer_rows)
    assert res.out is not None and res.out.parent == al.store_root()

    def no_model(_):
        raise AssertionError("a stored result must not build the model")

    again = al.align(target, ps, opt, build=no_model)
    assert again.out == res.out and again.score == res.score
    assert [r["layer"] for r in again.layer_rows] == [2, 4]
    assert set(again.tables) == set(res.tables)
    # a different probe list or option is a different result
    other = al.align(target, ps, AnalysisOptions(umap=False, k=1))
    assert other.out != res.out and other.summary["k"] == 1
    files = al.export_files(again)
    assert {"metrics.json", "report.html", "layers.csv", "probes.csv", "pairs.csv", "neighbors.csv"} <= set(files)
    assert json.loads(files["metrics.json"].read_text())["alignment_score"] == pytest.approx(res.score)


def test_at_init_runs_one_block_per_identical_layer_and_captures_the_same_states():
    """An expansion at init: each expanded block equals its pretrained block (checked weight by weight), so
    the app runs the pretrained one only; every captured stream is bit for bit what both blocks give."""
    from probelab.analysis.sources import capture_arrays

    tok = tiny_tokenizer()
    both = expand_model(tiny_llama(), ExpansionConfig(num_expanded=2)).eval()
    shared = expand_model(tiny_llama(), ExpansionConfig(num_expanded=2)).eval()
    assert all(al.branches_identical(layer) for layer in shared.control_layers)
    assert al.share_identical_branches(shared) == 2 and al.share_identical_branches(shared) == 0  # once
    runs = []
    for layer in shared.control_layers:
        layer.pretrained.register_forward_hook(lambda *a: runs.append(1))
    texts = al.probes_from_text(SMALL).texts
    a, meta_a = capture_arrays(both, tok, texts)
    b, meta_b = capture_arrays(shared, tok, texts)
    assert runs and meta_a["layers"] == meta_b["layers"] and a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert np.array_equal(b["pretrained/last"], b["expanded/last"])
    # a block whose weights differ (a trained one) keeps both branches
    moved = expand_model(tiny_llama(), ExpansionConfig(num_expanded=2)).eval()
    with torch.no_grad():
        next(moved.control_layers[0].expanded.parameters()).add_(1e-3)
    assert not al.branches_identical(moved.control_layers[0])
    assert al.share_identical_branches(moved) == 1
    c, _ = capture_arrays(moved, tok, texts)
    assert not np.array_equal(c["pretrained/last"], c["expanded/last"])


def test_umap_added_afterwards_equals_the_map_computed_in_one_go():
    """The page aligns without the map first and adds it with with_umap: same map, same silhouettes."""
    ps = al.probes_from_text(SMALL)
    target = al.AtInit("tiny-llama", 2)
    whole = al.align(target, ps, AnalysisOptions(umap=True, use_cache=False))
    fast = al.align(target, ps, AnalysisOptions(umap=False, use_cache=False))
    assert "umap" not in fast.tables and "umap" in whole.tables
    later = al.with_umap(fast, ps, AnalysisOptions(umap=True, use_cache=False))
    assert later.summary["silhouette"] == whole.summary["silhouette"]
    assert later.summary["umap"] == whole.summary["umap"] and later.score == whole.score
    assert later.tables["umap"].equals(whole.tables["umap"])
    opt = AnalysisOptions(umap=True)
    stored = al.store_result(later, target, ps, opt)
    assert (al.store_folder(target, ps, opt) / "umap.csv").is_file() and stored is later
    assert al.align(target, ps, opt, build=lambda _: pytest.fail("stored: no model")).tables["umap"].shape == \
        whole.tables["umap"].shape


def test_checkpoint_targets_drift_and_tables_agree_with_the_metrics(tmp_path):
    ps, opt = al.probes_from_text(SMALL), AnalysisOptions(umap=False, k=3)
    init = al.align(al.Checkpoint(str(control_folder(tmp_path / "init"))), ps, opt)
    moved = al.align(al.Checkpoint(str(control_folder(tmp_path / "moved", scale=0.05))), ps, opt)
    assert init.score == pytest.approx(1.0, abs=1e-6) and moved.score < init.score
    for res in (init, moved):
        for row in res.layer_rows:  # the neighbour table's retention is the per-probe retention behind the mean
            nn = al.neighbour_table(res, row["layer"])
            assert len(nn) == len(ps.items)
            assert nn["retention@k"].mean() == pytest.approx(row["nn_retention"])
            kept = nn["lost in B"] == ""
            assert (nn.loc[kept, "retention@k"] == 1.0).all()
    with pytest.raises(ProbelabError, match="no cosine neighbours at layer 3"):
        al.neighbour_table(init, 3)
    table, scores = al.compare_runs({"init": init, "moved": moved})
    assert list(scores["run"]) == ["init", "moved"]
    assert scores["alignment_score"].tolist() == pytest.approx([init.score, moved.score])
    assert sorted(set(table["layer"])) == [2, 4] and len(table) == 4
    fig = al.compare_figure(table)
    cos = [t for t in fig.data if t.xaxis == "x"]
    assert [t.name for t in cos] == ["init", "moved"]
    assert list(cos[1].y) == pytest.approx([r["cosine"] for r in moved.layer_rows])
    # a plain model vs itself as base: models mode, zero drift
    same = al.align(al.Checkpoint("tiny-llama", base="tiny-llama"), ps, opt)
    assert same.summary["mode"] == "models" and same.score == pytest.approx(1.0, abs=1e-6)


def test_bad_checkpoints_and_saved_folders_give_readable_errors(tmp_path):
    ps, opt = al.probes_from_text(SMALL), AnalysisOptions(umap=False)
    with pytest.raises(ProbelabError, match="not a checkpoint folder"):
        al.align(al.Checkpoint(str(tmp_path)), ps, opt)
    with pytest.raises(ProbelabError, match="is not a Control LLM checkpoint"):
        al.align(al.Checkpoint("tiny-llama"), ps, opt)
    with pytest.raises(ProbelabError, match="not an alignment folder"):
        al.load_alignment(tmp_path)


def test_load_alignment_reads_what_probelab_align_wrote(tmp_path):
    res = run_alignment("tiny-llama", base="tiny-llama", probes="analogies", umap=False, progress=False)
    res.write(tmp_path / "al")
    back = al.load_alignment(tmp_path / "al")
    assert back.score == pytest.approx(res.score)
    assert len(back.layer_rows) == len(res.layer_rows)
    for a, b in zip(back.layer_rows, res.layer_rows):
        assert a["layer"] == b["layer"] and a["cosine"] == pytest.approx(b["cosine"])
    assert len(back.tables["probes"]) == len(res.tables["probes"])


# ---- concepts ---------------------------------------------------------------------------------------
ROWS = [{"position": 0, "token": "<b>", "by_activation": [{"id": 3, "value": 2.0, "label": "x"}, {"id": 5, "value": 1.0}],
         "by_attribution": [{"id": 5, "value": -0.5}]},
        {"position": 1, "token": "\n", "by_activation": [{"id": 5, "value": 4.0}], "by_attribution": []}]


def test_concept_rows_values_and_highlighting():
    assert cc.concept_values(ROWS, 5, "by_activation") == [1.0, 4.0]
    assert cc.concept_values(ROWS, 7, "by_activation") == [0.0, 0.0]
    assert cc.top_values(ROWS, "by_attribution") == [-0.5, 0.0]
    ranked = cc.concepts_in(ROWS, "by_activation")
    assert ranked.to_dict("records") == [{"concept": 5, "label": "", "tokens": 2, "max value": 4.0},
                                         {"concept": 3, "label": "x", "tokens": 1, "max value": 2.0}]
    table = cc.rows_table(ROWS)
    assert table.loc[0, "SAE activation"] == "3 x (2)  5 (1)" and table.loc[0, "attribution score"] == "5 (-0.5)"
    html = cc.token_html(["<b>", "\n"], [-0.5, 0.0], cc.hover_titles(ROWS, "by_activation"))
    assert "&lt;b&gt;" in html and "<b>" not in html.split("</style>")[1]
    assert "rgba(30,100,220,0.900)" in html and "rgba(230,120,0,0.000)" in html  # blue full for the min, none for 0
    assert "\u21b5" in html and 'title="#0 &#x27;&lt;b&gt;&#x27;' in html
    # a dominant first token (attention sink) can be left out of the scale: the rest then spans it fully
    sink = cc.token_html(["s", "a", "b"], [100.0, 2.0, 1.0], ["", "", ""], skip_first=True)
    assert "rgba(230,120,0,0.900)" in sink and "rgba(230,120,0,0.490)" in sink
    plain = cc.token_html(["s", "a", "b"], [100.0, 2.0, 1.0], ["", "", ""])
    assert "rgba(230,120,0,0.096)" in plain


def test_concept_info_and_sae_choice_errors(tmp_path):
    from probelab.sae.labels import ConceptInfo, ConceptLabels

    labels = ConceptLabels([ConceptInfo(i, f"l{i}", 0.1) for i in range(4)])
    assert cc.concept_info(labels, 2).label == "l2"
    for bad, msg in [(4, "unknown concept id 4: this SAE has 4 concepts"), (-1, "unknown concept id -1"),
                     ("x", "whole number")]:
        with pytest.raises(ProbelabError, match=msg):
            cc.concept_info(labels, bad)
    model = tiny_llama()
    assert cc.get_sae("tiny", model).cfg.d_in == 64
    with pytest.raises(ProbelabError, match="default SAE is not trained yet"):
        cc.get_sae("default", model)
    with pytest.raises(ProbelabError, match="not an sae-lens SAE folder"):
        cc.get_sae(str(tmp_path), model)
    with pytest.raises(ProbelabError, match="no SAE given"):
        cc.get_sae(" ", model)
    from probelab.sae.train import default_sae_path

    assert cc.is_default_sae("default") and cc.is_default_sae("tiny") and cc.is_default_sae(str(default_sae_path()))
    assert not cc.is_default_sae(str(tmp_path))


def test_sae_rows_come_from_inspect_text_on_a_tiny_model():
    model, tok = tiny_llama(), tiny_tokenizer()
    out = cc.sae_rows(model, tok, cc.get_sae("tiny", model), "Hi there", top=2)
    assert [r["token"] for r in out["tokens"]][:3] == ["<|bos|>", "H", "i"]
    *inner, last = out["tokens"]
    assert all(len(r["by_activation"]) == 2 and len(r["by_attribution"]) == 2 for r in inner)
    # the last token has no next token, so no attribution score (shown as "–")
    assert len(last["by_activation"]) == 2 and last["by_attribution"] == []


def test_cocomix_rows_are_the_models_top_concept_logits():
    from probelab.models.cocomix import tiny_cocomix

    model, tok = tiny_cocomix(), tiny_tokenizer()
    out = cc.cocomix_rows(model, tok, "abc", top=3)
    ids = tok("abc", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        z = model(ids).concept_logits[0]
    top = z.topk(3)
    for t, row in enumerate(out["tokens"]):
        assert [c["id"] for c in row["by_prediction"]] == top.indices[t].tolist()
        assert [c["value"] for c in row["by_prediction"]] == pytest.approx(top.values[t].tolist(), abs=1e-5)
    assert out["n_concepts"] == 96
    with pytest.raises(ProbelabError, match="not a CoCoMix model"):
        cc.cocomix_rows(tiny_llama(), tok, "abc")
    with pytest.raises(ProbelabError, match="text is empty"):
        cc.cocomix_rows(model, tok, "  ")


# ---- steering ---------------------------------------------------------------------------------------
def test_steering_pairs_and_errors():
    from probelab.models.cocomix import tiny_cocomix
    from probelab.sae.tiny import tiny_sae

    model, tok = tiny_llama(), tiny_tokenizer()
    sae = tiny_sae()
    same = steering.steer_pair(model, tok, "Hello", {3: 0.0}, sae=sae, max_new_tokens=6)
    assert same["steered"] == same["unsteered"] and "SAE decoder direction" in same["how"]
    pushed = steering.steer_pair(model, tok, "Hello", {3: 200.0}, sae=sae, max_new_tokens=6)
    assert pushed["unsteered"] == same["unsteered"] and pushed["steered"] != pushed["unsteered"]
    with pytest.raises(ProbelabError, match="out of range"):
        steering.steer_pair(model, tok, "Hello", {10_000: 1.0}, sae=sae)
    with pytest.raises(ProbelabError, match="choose an SAE"):
        steering.steer_pair(model, tok, "Hello", {3: 1.0})
    with pytest.raises(ProbelabError, match="prompt is empty"):
        steering.steer_pair(model, tok, " ", {3: 1.0}, sae=sae)
    cm = tiny_cocomix()
    out = steering.steer_pair(cm, tok, "Hello", {5: 1.0}, max_new_tokens=4)
    assert out["steered"] == out["unsteered"] and "CoCoMix" in out["how"]  # factor 1 changes nothing
    with pytest.raises(ProbelabError, match="out of range"):
        steering.steer_pair(cm, tok, "Hello", {96: 2.0})


# ---- background training run ------------------------------------------------------------------------
def test_background_run_reports_running_finished_and_failed(tmp_path):
    import sys
    import time

    from probelab.app_support import training

    assert training.status().state == "none"
    make_final = ("import pathlib, sys, time; time.sleep(1); print('step 1/1'); "
                  "p = pathlib.Path(sys.argv[1]) / 'final'; p.mkdir(parents=True); (p / 'config.json').write_text('{}')")
    out = tmp_path / "runs" / "smoke"
    run = training.start(out, argv=[sys.executable, "-c", make_final, str(out)])
    assert run.state == "running" and training.status().state == "running"
    with pytest.raises(ProbelabError, match="still running"):
        training.start(out, argv=[sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 60
    while training.status().state == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    done = training.status()
    assert done.state == "finished" and done.final == out / "final" and "step 1/1" in done.log_tail
    training.start(tmp_path / "runs" / "bad", argv=[sys.executable, "-c", "raise SystemExit('boom: no data')"])
    while training.status().state == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    failed = training.status()
    assert failed.state == "failed" and "boom: no data" in failed.log_tail


def test_probelab_app_cli_warns_for_a_public_host_and_refuses_a_taken_port(capsys):
    from probelab.cli import main

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SystemExit) as e:
            main(["app", "--host", "0.0.0.0", "--port", str(port)])
    err = capsys.readouterr().err
    assert e.value.code == 1
    assert "warning: binding to 0.0.0.0" in err and f"error: cannot listen on 0.0.0.0:{port}" in err
    assert "Traceback" not in err


def test_background_run_with_a_reused_pid_is_not_running(tmp_path):
    """A state file whose pid now belongs to a process that started after the run (pid reuse) reads as
    finished/failed, not running."""
    import json
    import os
    import time

    from probelab.app_support import training
    from probelab.paths import atomic_write_text

    out = tmp_path / "runs" / "smoke"
    # a live pid (this process) whose run started now: running
    atomic_write_text(training.state_file(), json.dumps({"pid": os.getpid(), "out": str(out), "log": str(tmp_path / "l"),
                                                         "started": time.time()}))
    assert training.status().state == "running"
    # pid 1 is alive, but it started long after this run "started" a year ago: its pid was reused
    atomic_write_text(training.state_file(), json.dumps({"pid": 1, "out": str(out), "log": str(tmp_path / "l"),
                                                         "started": time.time() - 3600 * 24 * 365}))
    assert training.status().state == "failed"
