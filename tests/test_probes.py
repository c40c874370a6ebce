"""Probe sets: the built-in analogies and the validating loader."""
import pytest

from probelab import load_probes
from probelab.errors import ProbeFileError

PAPER_FIRST = ["king is to queen", "man is to woman"]


def test_analogies_cover_the_paper_and_ten_categories():
    ps = load_probes("analogies")
    assert len(ps.categories) >= 10
    per_cat = {c: sum(1 for p in ps.items if p.category == c) // 2 for c in ps.categories}
    assert min(per_cat.values()) >= 6
    paper = ps.filter(source="paper")
    assert len(paper.texts) == 40 and len(paper.pairs) == 20
    assert paper.texts[:2] == PAPER_FIRST
    for i, j in ps.pairs:
        a, b = ps.items[i], ps.items[j]
        assert a.pair_id == b.pair_id and (a.side, b.side) == (0, 1) and a.category == b.category
    assert len(set(ps.texts)) == len(ps.texts)  # every sentence appears once


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("body,message", [
    ('{"id": "a", "category": "c", "sentences": ["x is to y", "z is to w"]}\n{"id": "b", "category": "c"}\n',
     r"bad.jsonl:2: missing key 'sentences'"),
    ('{"id": "a", "category": "c", "sentences": ["x is to y"]}\n', r":1: 'sentences' must be a list of 2"),
    ('# comment\n\n{"id": "a", "category": "c", "sentences": ["x", "y"]}\n{broken\n', r":4: invalid JSON"),
    ('{"id": "a", "category": "c", "sentences": ["x", "y"]}\n{"id": "a", "category": "c", "sentences": ["u", "v"]}\n',
     r":2: duplicate id 'a'"),
    ('[1, 2]\n', r":1: expected a JSON object"),
    ('{"id": "", "category": "c", "sentences": ["x", "y"]}\n', r":1: 'id' must be"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, body, message):
    with pytest.raises(ProbeFileError, match=message):
        load_probes(write(tmp_path, "bad.jsonl", body))


def test_txt_file_and_minimum_size(tmp_path):
    ps = load_probes(write(tmp_path, "mine.txt", "# my probes\nthe cat sat\n\nthe dog ran\n"))
    assert ps.texts == ["the cat sat", "the dog ran"] and ps.pairs == []
    with pytest.raises(ProbeFileError, match="at least 2 sentences"):
        load_probes(write(tmp_path, "one.txt", "only one\n"))


def test_unknown_set_and_type(tmp_path):
    with pytest.raises(ProbeFileError, match="built-in sets: analogies"):
        load_probes("nope")
    with pytest.raises(ProbeFileError, match="unsupported probe file type"):
        load_probes(write(tmp_path, "x.csv", "a,b\n"))
