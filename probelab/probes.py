"""Probe sets: sentences to feed a model, with pair and category labels.

Built-in sets are the files ``probes/<name>.jsonl`` (the repository's ``probes/`` folder, shipped inside
the wheel; :func:`probelab.resources.probes_dir` finds it, ``$PROBELAB_PROBES_DIR`` overrides it); users
pass their own file path. Two formats (schema in ``probes/README.md``):

- ``.jsonl``: one analogy *pair* per line, ``{"id", "category", "sentences": [a, b], "source"?}``;
  blank lines and lines starting with ``#`` are ignored;
- ``.txt``: one sentence per line (no pairs; category ``custom``).

The loader validates everything and reports the first problem as ``FILE:LINE: message``.

>>> ps = load_probes("analogies")
>>> len(ps.texts), len(ps.categories), ps.items[0].text
(120, 10, 'king is to queen')
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ProbeFileError, ProbelabError
from .resources import probes_dir

REQUIRED = ("id", "category", "sentences")




@dataclass(frozen=True)
class Probe:
    text: str
    pair_id: str | None  # the analogy pair this sentence belongs to (None for plain sentences)
    category: str
    side: int  # 0 or 1 within its pair ("king is to queen" = 0, "man is to woman" = 1)
    source: str = "user"


@dataclass
class ProbeSet:
    name: str
    items: list[Probe]
    path: Path | None = None

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.items]

    @property
    def categories(self) -> list[str]:
        return sorted({p.category for p in self.items})

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Index pairs (i, j) into ``items`` of the two sentences of each analogy pair."""
        first: dict[str, int] = {}
        out = []
        for i, p in enumerate(self.items):
            if p.pair_id is None:
                continue
            if p.pair_id in first:
                out.append((first[p.pair_id], i))
            else:
                first[p.pair_id] = i
        return out

    def filter(self, source: str | None = None, categories: list[str] | None = None) -> "ProbeSet":
        items = [p for p in self.items if (source is None or p.source == source)
                 and (categories is None or p.category in categories)]
        if len(items) < 2:
            raise ProbeFileError(f"probe set {self.name!r} has fewer than 2 sentences after filtering")
        return ProbeSet(self.name, items, self.path)


def available_probe_sets() -> dict[str, Path]:
    try:
        folder = probes_dir()
    except ProbelabError:  # an incomplete installation: no built-in sets, user files still load
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.jsonl"))} if folder.is_dir() else {}


def _parse_jsonl(path: Path) -> list[Probe]:
    items: list[Probe] = []
    seen: set[str] = set()
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ProbeFileError(f"{where}: invalid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise ProbeFileError(f"{where}: expected a JSON object")
        missing = [k for k in REQUIRED if k not in rec]
        if missing:
            raise ProbeFileError(f"{where}: missing key {missing[0]!r} (required: {', '.join(REQUIRED)})")
        pid, cat, sents = rec["id"], rec["category"], rec["sentences"]
        if not isinstance(pid, str) or not pid:
            raise ProbeFileError(f"{where}: 'id' must be a non-empty string")
        if pid in seen:
            raise ProbeFileError(f"{where}: duplicate id {pid!r}")
        if not isinstance(cat, str) or not cat:
            raise ProbeFileError(f"{where}: 'category' must be a non-empty string")
        if (not isinstance(sents, list) or len(sents) != 2
                or not all(isinstance(s, str) and s.strip() for s in sents)):
            raise ProbeFileError(f"{where}: 'sentences' must be a list of 2 non-empty strings")
        seen.add(pid)
        src = str(rec.get("source", "user"))
        items += [Probe(s.strip(), pid, cat, side, src) for side, s in enumerate(sents)]
    return items


def _parse_txt(path: Path) -> list[Probe]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return [Probe(ln, None, "custom", 0) for ln in lines if ln and not ln.startswith("#")]


PARSERS = {".jsonl": _parse_jsonl, ".txt": _parse_txt}


def load_probes(name_or_path: str | Path = "analogies") -> ProbeSet:
    """Load a built-in probe set by name or a user file (``.jsonl`` pairs or ``.txt`` sentences)."""
    key = str(name_or_path)
    builtin = available_probe_sets()
    path = builtin.get(key) or Path(key).expanduser()
    if not path.is_file():
        names = ", ".join(builtin) or "(none found)"
        raise ProbeFileError(f"no probe set or file {key!r}; built-in sets: {names}")
    parser = PARSERS.get(path.suffix)
    if parser is None:
        raise ProbeFileError(f"{path}: unsupported probe file type {path.suffix!r}; use .jsonl or .txt")
    try:
        items = parser(path)
    except UnicodeDecodeError:
        raise ProbeFileError(f"{path}: not a UTF-8 text file") from None
    if len(items) < 2:
        raise ProbeFileError(f"{path}: a probe set needs at least 2 sentences, found {len(items)}")
    return ProbeSet(path.stem, items, path)
