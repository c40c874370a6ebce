"""Hidden-state alignment analysis (the Control LLM paper's Figure 8, reproducible).

Modules, each usable alone: :mod:`.metrics` (drift between two sides), :mod:`.pairs` (semantic
stability of analogy pairs), :mod:`.neighbors` (nearest neighbours, retention@k),
:mod:`.umap_layers` (UMAP map and layer silhouettes), :mod:`.score` (the alignment score),
:mod:`.report` (HTML), :mod:`.cache` (content-addressed cache), :mod:`.align` (orchestration),
:mod:`.compare` (several checkpoints side by side).
"""
from .align import AlignmentResult, AnalysisOptions, analyze, gather_input, run_alignment
from .compare import compare

__all__ = ["run_alignment", "analyze", "gather_input", "AlignmentResult", "AnalysisOptions", "compare"]
