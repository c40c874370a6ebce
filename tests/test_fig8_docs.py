"""The Python examples of docs/alignment.md's Figure 8 section and of docs/steering.md run as written."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def blocks(name: str, section: str | None = None) -> list[str]:
    text = (DOCS / name).read_text(encoding="utf-8")
    if section is not None:
        start = text.index(section)
        nxt = text.find("\n## ", start + len(section))
        text = text[start:nxt if nxt > 0 else None]
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize("name, section", [("alignment.md", "## The Figure 8 grid"), ("steering.md", None)])
def test_docs_examples_run(name, section, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    code = blocks(name, section)
    assert code, f"docs/{name} has no python example"
    for c in code:
        assert len(c.strip().splitlines()) <= 16, "examples stay short"
        exec(compile(c, f"docs/{name}", "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out.strip()
    if name == "alignment.md":
        html = (tmp_path / "fig8" / "compare" / "compare.html").read_text()
        assert 'id="fig-grid"' in html and not re.search(r"<script[^>]+src=", html)
    else:
        assert (tmp_path / "sweep" / "sweep.html").is_file()
