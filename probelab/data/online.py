"""The papers' real training sets, loaded through ``datasets`` (network, opt-in).

The Control LLM paper's continual SFT uses OpenMathInstruct-2 (math) and OpenCoder SFT (code).
Each source is a loader (``datasets.load_dataset`` call) plus a row formatter; the formatters are
plain functions tested on local ``datasets.Dataset`` objects with the same columns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from ..errors import NetworkDisabled, ProbelabError
from ..paths import network_allowed
from .examples import Example


def format_openmath2(row: dict) -> Example:
    """nvidia/OpenMathInstruct-2: ``problem`` → ``generated_solution`` (answer: ``expected_answer``)."""
    return Example(row["problem"].strip(), row["generated_solution"].strip(), str(row.get("expected_answer", "")))


def format_opencoder(row: dict) -> Example:
    """OpenCoder-LLM/opc-sft-stage1|2: ``instruction`` → ``output``."""
    return Example(row["instruction"].strip(), row["output"].strip(), "")


def format_text(row: dict) -> Example:
    """Plain text (continual pretraining, e.g. OpenWebText): loss on every token."""
    return Example("", row["text"], "")


@dataclass(frozen=True)
class OnlineSource:
    path: str
    name: str | None
    split: str
    formatter: Callable[[dict], Example]
    required: tuple[str, ...]


ONLINE_SOURCES: dict[str, OnlineSource] = {
    "openmath2": OnlineSource("nvidia/OpenMathInstruct-2", None, "train_1M", format_openmath2,
                              ("problem", "generated_solution")),
    "opencoder-stage2": OnlineSource("OpenCoder-LLM/opc-sft-stage2", "educational_instruct", "train",
                                     format_opencoder, ("instruction", "output")),
    "opencoder-stage1": OnlineSource("OpenCoder-LLM/opc-sft-stage1", "realuser_instruct", "train",
                                     format_opencoder, ("instruction", "output")),
    "openwebtext": OnlineSource("Skylion007/openwebtext", None, "train", format_text, ("text",)),
}


def format_rows(source: str, rows: Iterable[dict], limit: int | None = None) -> list[Example]:
    """Format rows (a ``datasets.Dataset`` or any iterable of dicts) of a known source."""
    spec = _spec(source)
    out = []
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        missing = [c for c in spec.required if c not in row]
        if missing:
            raise ProbelabError(f"{source}: row {i} lacks column(s) {', '.join(missing)}")
        out.append(spec.formatter(row))
    return out


def load_online(source: str, limit: int | None = None, allow_network: bool | None = None,
                streaming: bool = True) -> list[Example]:
    """Download (streaming) and format the first ``limit`` rows of a paper dataset."""
    spec = _spec(source)
    if not network_allowed(allow_network):
        raise NetworkDisabled(f"data source {source!r} downloads {spec.path}; set PROBELAB_ALLOW_NETWORK=1")
    import datasets

    ds = datasets.load_dataset(spec.path, spec.name, split=spec.split, streaming=streaming)
    return format_rows(source, ds, limit)


def _spec(source: str) -> OnlineSource:
    if source not in ONLINE_SOURCES:
        raise ProbelabError(f"unknown online data source {source!r}; known: {', '.join(ONLINE_SOURCES)}")
    return ONLINE_SOURCES[source]
