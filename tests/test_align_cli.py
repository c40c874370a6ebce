"""`probelab align` / `probelab compare` end to end: outputs, offline report, one-line errors, atomicity."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import torch

from probelab.analysis.report import FIGURES
from probelab.cli import main
from probelab.models.control import ExpansionConfig, expand_model, save_control
from probelab.models.tiny import tiny_llama, tiny_tokenizer

PAIRS = [
    ("gender", "king is to queen", "man is to woman"), ("gender", "uncle is to aunt", "nephew is to niece"),
    ("tense", "see is to saw", "go is to went"), ("tense", "swim is to swam", "fly is to flew"),
    ("plural", "mouse is to mice", "goose is to geese"), ("plural", "child is to children", "person is to people"),
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def probe_file(tmp_path):
    f = tmp_path / "small.jsonl"
    f.write_text("\n".join(json.dumps({"id": f"p{i}", "category": c, "sentences": [s0, s1]})
                           for i, (c, s0, s1) in enumerate(PAIRS)))
    return f


def save_plain(model, folder):
    model.save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def control_dir(tmp_path):
    model = expand_model(tiny_llama(), ExpansionConfig(num_expanded=2))
    with torch.no_grad():
        for layer in model.control_layers:
            for p in layer.expanded.parameters():
                p.add_(0.01 * torch.randn_like(p))
    return save_control(model, tmp_path / "ctrl", tiny_tokenizer())


def run_cli(args, capsys):
    capsys.readouterr()  # drop what the test's own setup printed (e.g. save_pretrained progress bars)
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_align_writes_metrics_csvs_and_an_offline_report(control_dir, probe_file, tmp_path, capsys):
    out = tmp_path / "al"
    code, stdout, err = run_cli(["align", control_dir, "--probes", probe_file, "--out", out], capsys)
    assert code == 0, err
    assert "alignment score" in stdout and "report.html" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert 0 < m["alignment_score"] < 1 and m["mode"] == "branches"
    assert [r["layer"] for r in m["layers"]] == [2, 4]
    for r in m["layers"]:
        for key in ("layer", "cosine", "euclidean", "nn_retention", "pair_cosine_pretrained", "pair_cosine_expanded"):
            assert isinstance(r[key], (int, float)), key
    for name in ("layers", "probes", "pairs", "neighbors", "umap"):
        df = pd.read_csv(out / f"{name}.csv")
        assert len(df) > 0
    umap = pd.read_csv(out / "umap.csv")
    assert len(umap) == 2 * 2 * 12 and set(umap["side"]) == {"pretrained", "expanded"}
    html = (out / "report.html").read_text()
    for fig in FIGURES:
        assert f'id="{fig}"' in html, fig
    assert not re.search(r"<script[^>]+src=", html), "report loads a script from elsewhere"
    assert not re.search(r"<link[^>]+href=\"?https?:", html)
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js inlined


def test_compare_writes_one_page_and_one_csv(control_dir, probe_file, tmp_path, capsys):
    base = save_plain(tiny_llama(), tmp_path / "base")
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli(["align", control_dir, "--probes", probe_file, "--out", a, "--no-umap"], capsys)[0] == 0
    assert run_cli(["align", base, "--base", base, "--probes", probe_file, "--out", b], capsys)[0] == 0
    code, stdout, err = run_cli(["compare", b, a, "--out", tmp_path / "cmp"], capsys)
    assert code == 0, err
    df = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert list(df["run"].unique()) == ["b", "a"]
    assert df[df["run"] == "b"]["alignment_score"].iloc[0] == pytest.approx(1.0)
    html = (tmp_path / "cmp" / "compare.html").read_text()
    assert 'id="fig-trajectory"' in html and 'id="fig-compare-drift"' in html and 'id="fig-compare-umap"' in html
    assert not re.search(r"<script[^>]+src=", html)


def _assert_one_line_error(code, err, pattern, out):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(pattern, lines[0]), err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))


def test_hidden_size_mismatch_is_one_line_error(tmp_path, probe_file, capsys):
    small = save_plain(tiny_llama(hidden=32), tmp_path / "d32")
    base = save_plain(tiny_llama(), tmp_path / "d64")
    out = tmp_path / "out"
    code, _, err = run_cli(["align", small, "--base", base, "--probes", probe_file, "--out", out], capsys)
    _assert_one_line_error(code, err, r"hidden sizes differ.*32.*64", out)


def test_tokenizer_mismatch_is_an_error(tmp_path, probe_file, capsys):
    from probelab.analysis import run_alignment
    from probelab.errors import ProbelabError

    other = tiny_tokenizer()
    other.add_bos_token = False
    out = tmp_path / "out"
    with pytest.raises(ProbelabError, match="tokenizers differ"):
        run_alignment((tiny_llama(), other), base=(tiny_llama(), tiny_tokenizer()), probes=str(probe_file),
                      out=out, umap=False, progress=False)
    assert not out.exists()


def test_one_sentence_probe_file_is_one_line_error(tmp_path, capsys):
    f = tmp_path / "one.txt"
    f.write_text("king is to queen\n")
    out = tmp_path / "out"
    code, _, err = run_cli(["align", "tiny-llama", "--base", "tiny-llama", "--probes", f, "--out", out], capsys)
    _assert_one_line_error(code, err, r"at least 2 sentences", out)


def test_nan_states_are_one_line_error_and_keep_an_old_output(tmp_path, probe_file, control_dir, capsys):
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    broken = save_plain(model, tmp_path / "nan")
    out = tmp_path / "out"
    code, _, err = run_cli(["align", broken, "--base", "tiny-llama", "--probes", probe_file, "--out", out], capsys)
    _assert_one_line_error(code, err, r"NaN.*layer 2", out)
    # a failed run never damages an earlier output folder
    assert run_cli(["align", control_dir, "--probes", probe_file, "--out", out, "--no-umap"], capsys)[0] == 0
    before = (out / "metrics.json").read_text()
    code, _, err = run_cli(["align", broken, "--base", "tiny-llama", "--probes", probe_file, "--out", out], capsys)
    assert code == 1 and (out / "metrics.json").read_text() == before


def test_plain_model_without_base_and_bad_compare_input(tmp_path, probe_file, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["align", "tiny-llama", "--probes", probe_file, "--out", out], capsys)
    _assert_one_line_error(code, err, r"not a Control LLM checkpoint.*--base", out)
    code, _, err = run_cli(["compare", tmp_path, "--out", tmp_path / "cmp"], capsys)
    _assert_one_line_error(code, err, r"no metrics.json", tmp_path / "cmp")
