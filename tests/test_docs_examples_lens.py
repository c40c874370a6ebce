"""The Python examples in docs/lens.md and docs/features.md run as written (users copy them)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("name", ["lens.md", "features.md"])
def test_docs_python_examples_run(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROBELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(name)
    assert blocks, f"docs/{name} has no python example"
    for code in blocks:
        assert len(code.strip().splitlines()) <= 14, "examples stay short"
        exec(compile(code, f"docs/{name}", "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    assert printed.strip()
    if name == "features.md":
        page = (tmp_path / "latent.html").read_text(encoding="utf-8")
        assert "<svg" in page and "<script" not in page
