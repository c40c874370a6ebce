"""What the alignment page aligns, and the shapes it shows; every number comes from :mod:`probelab.analysis`.

Two kinds of *target*:

- :class:`AtInit`: a base model expanded as a Control LLM and not trained (the paper's Figure 8
  panel a: both branches identical, cosine 1 / Euclidean 0 at every merged layer). Needs no set-up,
  so it is the page's default.
- :class:`Checkpoint`: a model folder (or name); compared with its own pretrained branch when it is
  a Control LLM, or with a base model layer by layer.

:func:`align` runs :func:`probelab.analysis.gather_input` + :func:`probelab.analysis.analyze` in
steps (so the page can show progress) and keeps every result in a store under
``<cache>/app/alignments/<key>/`` (written by ``AlignmentResult.write``, read back by
:func:`load_alignment`), keyed by the content of the models, the probes and the options: a
restarted app shows a result it has computed before without loading any model.

>>> ps = probes_from_text("king is to queen | man is to woman\\nParis is in France")
>>> [(p.text, p.pair_id, p.side) for p in ps.items]
[('king is to queen', 'pasted-1', 0), ('man is to woman', 'pasted-1', 1), ('Paris is in France', None, 0)]
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ..errors import ProbelabError

STORE_VERSION = 1  # bump when what the store holds changes meaning
PAIR_SEPARATOR = "|"
Progress = Callable[[float, str], None]


# ---- targets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AtInit:
    """``base`` expanded with ``num_expanded`` ``interpolation`` layers, untrained."""
    base: str
    num_expanded: int = 6
    interpolation: str = "lerp"

    @property
    def label(self) -> str:
        return f"{self.base} + {self.interpolation.capitalize()}{self.num_expanded} at init"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint (folder or model name); ``base=None`` compares its Control LLM branches."""
    path: str
    base: str | None = None

    @property
    def label(self) -> str:
        name = Path(self.path).name or self.path
        return name if self.base is None else f"{name} vs {Path(self.base).name or self.base}"


Target = AtInit | Checkpoint


def build_at_init(target: AtInit):
    """``(control_model, tokenizer)``: a fresh copy of the base model, expanded (nothing trained)."""
    from ..models import load_model
    from ..models.control import ExpansionConfig, expand_model
    from ..models.devices import env_device, env_dtype
    from .prewarm import take

    # the first page's target: the start model the server loaded while it started, when it is this one
    model, tok = take(target.base, env_device(), env_dtype()) or load_model(target.base, device=env_device(),
                                                                            dtype=env_dtype())
    control = expand_model(model, ExpansionConfig(num_expanded=int(target.num_expanded),
                                                  interpolation=target.interpolation, base_model=target.base))
    share_identical_branches(control)
    return control.eval(), tok


def branches_identical(layer) -> bool:
    """Whether a Control layer's expanded block has exactly the pretrained block's weights and buffers
    (the same names, dtypes, shapes and values: checked, not assumed)."""
    import torch

    a, b = layer.pretrained.state_dict(), layer.expanded.state_dict()
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


class _SameOutput:
    """Stands in for an expanded block whose weights equal the pretrained block's: returns what the
    pretrained block just computed on the same input (a Control layer runs the pretrained block first,
    on the same arguments), so each shared layer runs one block instead of two."""

    def __init__(self, pretrained) -> None:
        self.out = None
        pretrained.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        self.out = output

    def __call__(self, *args, **kwargs):
        out, self.out = self.out, None
        if out is None:
            raise RuntimeError("the shared expanded block ran before its pretrained block")
        return out


def share_identical_branches(control) -> int:
    """In a Control model whose expanded blocks are exact copies of the pretrained ones (an expansion at
    init), run each such layer's pretrained block only and reuse its output for the expanded branch
    (identical weights and input give identical states). Returns how many layers share; a layer whose
    weights differ (trained, or noise-initialised) keeps both blocks. Only for a model that is not
    trained afterwards: the expanded weights are no longer used."""
    shared = 0
    for layer in getattr(control, "control_layers", []):
        if isinstance(layer.__dict__.get("_same_output"), _SameOutput) or not branches_identical(layer):
            continue
        echo = _SameOutput(layer.pretrained)
        object.__setattr__(layer, "_same_output", echo)
        expanded = layer.expanded
        del layer._modules["expanded"]  # the weights stay for state_dict / fingerprints via this holder
        layer.add_module("expanded_weights", expanded)
        object.__setattr__(layer, "expanded", echo)
        shared += 1
    return shared


# ---- probes -------------------------------------------------------------------------------------
def probes_from_text(text: str, name: str = "pasted"):
    """A probe set from pasted lines: ``a | b`` makes an analogy pair, any other line a single sentence."""
    from ..probes import Probe, ProbeSet

    items = []
    for n, line in enumerate((text or "").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(PAIR_SEPARATOR)]
        if len(parts) == 2 and all(parts):
            items += [Probe(parts[0], f"{name}-{n}", name, 0), Probe(parts[1], f"{name}-{n}", name, 1)]
        elif len(parts) == 1:
            items.append(Probe(parts[0], None, name, 0))
        else:
            raise ProbelabError(f"line {n}: use one sentence, or two separated by one '{PAIR_SEPARATOR}' (a pair)")
    if not items:
        raise ProbelabError("the probe list is empty: paste at least 2 sentences, one per line")
    if len(items) < 2:
        raise ProbelabError("the probe list has 1 sentence; alignment needs at least 2")
    return ProbeSet(name, items)


def probe_key(probe_set) -> list:
    return [[p.text, p.pair_id, p.category, p.side] for p in probe_set.items]


# ---- the store ----------------------------------------------------------------------------------
def store_root() -> Path:
    from ..paths import cache_dir

    return cache_dir() / "app" / "alignments"


def target_fingerprint(target: Target) -> list:
    """What a target's result depends on: the content of its model folders (or in-memory weights)."""
    from ..analysis.sources import resolve_source

    if isinstance(target, AtInit):
        return ["at-init", resolve_source(target.base).fingerprint(), int(target.num_expanded), target.interpolation]
    for spec in (target.path, target.base):
        _check_spec(spec)  # a readable error before anything tries to load it
    base = None if target.base is None else resolve_source(target.base).fingerprint()
    return ["checkpoint", resolve_source(target.path).fingerprint(), base]


def store_key(target: Target, probe_set, options) -> str:
    from .. import __version__
    from ..analysis import cache

    return cache.key("app-alignment", STORE_VERSION, __version__, target_fingerprint(target), probe_key(probe_set),
                     dataclasses.asdict(options))


def store_folder(target: Target, probe_set, options) -> Path | None:
    """Where the store keeps (or would keep) this result; ``None`` when ``options.use_cache`` is off."""
    return store_root() / store_key(target, probe_set, options) if options.use_cache else None


def load_alignment(folder: str | Path):
    """An :class:`~probelab.analysis.AlignmentResult` read back from a folder written by ``probelab align``."""
    from ..analysis import AlignmentResult
    from ..analysis.compare import read_alignment

    folder = Path(folder)
    m = read_alignment(folder)  # one-line error if it is not an alignment folder
    layers = m.pop("layers")
    states = m.pop("_states", None)
    for k in ("_umap", "_name", "_probes"):
        m.pop(k, None)
    tables = {p.stem: pd.read_csv(p) for p in sorted(folder.glob("*.csv"))}
    if states is not None:
        states = {k: v for k, v in states.items() if k != "layers"}
    return AlignmentResult(m, layers, tables, out=folder, states=states)


def align(target: Target, probe_set, options, *, build: Callable | None = None, progress: Progress | None = None,
          store: bool = True):
    """The alignment of ``target`` on ``probe_set``, from the store when it was computed before.

    ``build(target)`` returns the in-memory ``(model, tokenizer)`` of an :class:`AtInit` target (the app
    passes a cached one); by default :func:`build_at_init`. ``progress(fraction, message)`` is told
    about each step.
    """
    from ..analysis import analyze, gather_input
    from ..analysis.align import resolve_probes

    say = progress or (lambda f, m: None)
    probe_set = resolve_probes(probe_set)
    if isinstance(target, Checkpoint):
        for spec in (target.path, target.base):
            _check_spec(spec)
    folder = store_folder(target, probe_set, options) if store else None
    if folder is not None:
        say(0.02, "looking for a stored result")
        if (folder / "metrics.json").is_file():
            say(1.0, "loaded a stored result")
            return load_alignment(folder)
    if isinstance(target, AtInit):
        say(0.1, f"loading and expanding {target.base}")
        ckpt, base, base_label = (build or build_at_init)(target), None, None
    else:
        ckpt, base, base_label = target.path, target.base, target.base
    say(0.3, f"capturing hidden states of {len(probe_set.items)} probes (cached after the first run)")
    from ..models.devices import env_device, env_dtype

    inp = gather_input(ckpt, base, probe_set.texts, options.use_cache, device=env_device(), dtype=env_dtype())
    say(0.7, "drift, neighbours, pairs" + (" and UMAP" if options.umap else ""))
    result = analyze(inp, probe_set, options, checkpoint=target.label, base=base_label)
    if folder is not None:
        say(0.95, "storing the result")
        result.write(folder)
    say(1.0, "done")
    return result


def with_umap(result, probe_set, options, *, store: bool = True):
    """``result`` (computed with the UMAP map off) with its UMAP map and map silhouettes added, as
    :func:`align` would have computed them with ``options`` (same states, same cached functions); stored
    under ``options``' key so that a restarted app reads it back whole.

    The page draws the drift curves first and calls this afterwards: the map is the slowest step.
    """
    import numpy as np

    from ..analysis import AlignmentResult
    from ..analysis import align as A
    from ..analysis import umap_layers
    from ..analysis.align import resolve_probes

    if "umap" in result.tables or not options.umap:
        return result
    if result.states is None:
        raise ProbelabError("this result has no stored states to draw a UMAP map from; align it again")
    probe_set = resolve_probes(probe_set)
    layers = list(result.summary["layers_compared"])
    points = umap_layers.stack_points(np.asarray(result.states["pretrained"]), np.asarray(result.states["expanded"]),
                                      layers, options.umap_normalize)
    summary = {**result.summary}
    tables = dict(result.tables)
    if len(points.x) >= 4:
        coords = A.umap_coords(points, options)
        summary["silhouette"] = A.cached_silhouettes(points, coords, options)
        summary["umap"] = {"metric": options.umap_metric, "seed": options.seed, "n_neighbors": options.n_neighbors,
                           "min_dist": options.min_dist, "reduce_dims": options.reduce_dims,
                           "n_epochs": options.n_epochs, "normalized": options.umap_normalize}
        texts = np.array([p.text for p in probe_set.items], dtype=object)
        cats = np.array([p.category for p in probe_set.items], dtype=object)
        tables["umap"] = pd.DataFrame({
            "side": np.where(points.side == 0, "pretrained", "expanded"), "layer": points.layer,
            "probe": points.probe, "text": texts[points.probe], "category": cats[points.probe],
            "x": coords[:, 0], "y": coords[:, 1]})
    return AlignmentResult(summary, result.layer_rows, tables, timings=dict(result.timings), states=result.states)


def store_result(result, target: Target, probe_set, options):
    """Write ``result`` into the store under its key (nothing when ``options.use_cache`` is off); returns it."""
    from ..analysis.align import resolve_probes

    folder = store_folder(target, resolve_probes(probe_set), options)
    if folder is not None and not (folder / "metrics.json").is_file():
        result.write(folder)
    return result


def _check_spec(spec: str | None) -> None:
    """A registered model name passes; anything else must be a checkpoint folder (readable error if not)."""
    from ..models import MODELS
    from .sources import check_checkpoint

    if spec is not None and spec not in MODELS:
        check_checkpoint(spec)


# ---- what the page shows ------------------------------------------------------------------------
def export_files(result) -> dict[str, Path]:
    """The files of an alignment (``metrics.json``, CSV tables, ``report.html``) by name, written if needed."""
    import tempfile

    folder = result.out
    if folder is None or not (Path(folder) / "metrics.json").is_file():
        folder = Path(tempfile.mkdtemp(prefix="probelab-app-")) / "alignment"
        result.write(folder)
    from ..paths import alignment_files

    return {p.name: p for p in alignment_files(folder)}  # only what probelab wrote, never other files there


MIME = {".json": "application/json", ".csv": "text/csv", ".html": "text/html"}


def neighbour_table(result, layer: int, metric: str = "cosine") -> pd.DataFrame:
    """One row per probe at ``layer``: its k neighbours on each side, the ones lost, retention@k."""
    nn = result.tables["neighbors"]
    nn = nn[(nn["metric"] == metric) & (nn["layer"] == layer)]
    if nn.empty:
        raise ProbelabError(f"no {metric} neighbours at layer {layer}")
    probes = result.tables["probes"]
    probes = probes[(probes["token"] == "last") & (probes["layer"] == layer)].set_index("probe")
    ret_col = "nn_retention" if metric == "cosine" else f"nn_retention_{metric}"
    rows = []
    for probe, d in nn.groupby("probe", sort=True):
        a = d[d["side"] == "pretrained"].sort_values("rank")
        b = d[d["side"] == "expanded"].sort_values("rank")
        kept = set(a["neighbor"])
        rows.append({"probe": d["text"].iloc[0],
                     "neighbours A": ", ".join(a["neighbor_text"].astype(str)),
                     "neighbours B": ", ".join(b["neighbor_text"].astype(str)),
                     "lost in B": ", ".join(t for j, t in zip(b["neighbor"], b["neighbor_text"].astype(str))
                                            if j not in kept),
                     "retention@k": float(probes.loc[probe, ret_col]) if ret_col in probes else None})
    return pd.DataFrame(rows)


def layer_frame(result) -> pd.DataFrame:
    """The per-layer rows of ``metrics.json`` as a table (columns that are all empty dropped)."""
    return pd.DataFrame(result.layer_rows).dropna(axis=1, how="all")


def compare_runs(named: dict[str, object]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per-layer table, score table)`` of several results, as ``probelab compare`` tabulates them."""
    from ..analysis.compare import compare_table, scores_table

    runs = [{**r.metrics_json(), "_name": name, "_umap": r.tables.get("umap")} for name, r in named.items()]
    return compare_table(runs), scores_table(runs)


def grid_runs(named: dict[str, object]) -> list[dict]:
    """Results shaped as :func:`probelab.analysis.compare.figure8` reads alignment folders."""
    from ..analysis.compare import probe_info

    runs = []
    for name, r in named.items():
        st = getattr(r, "states", None)
        runs.append({"_name": name, "_probes": probe_info(r.tables["probes"]) if "probes" in r.tables else None,
                     "_states": None if st is None else {**st, "layers": list(r.summary["layers_compared"])}})
    return runs


def common_layers(named: dict[str, object]) -> list[int]:
    """The layers every result compares (the Figure 8 grid's possible columns)."""
    sets = [set(int(x) for x in r.summary["layers_compared"]) for r in named.values()]
    return sorted(set.intersection(*sets)) if sets else []


def figure8_figure(named: dict[str, object], layers: list[int] | None = None, embed_fn=None):
    """The Figure 8 grid of up to 4 results (rows) at ``layers`` (columns), one shared UMAP fit per layer."""
    from ..analysis.compare import figure8
    from ..analysis.report import grid_figure

    grid, probes = figure8(grid_runs(named), layers, embed_fn)
    return grid_figure(grid, probes)


COMPARE_CURVES = ("cosine", "euclidean", "relative_euclidean", "nn_retention", "pair_cosine_expanded",
                  "pair_cosine_change")


def compare_figure(table: pd.DataFrame, curves=COMPARE_CURVES):
    """Drift curves of several checkpoints overlaid, one panel per metric (the paper's a-f side by side)."""
    import plotly.express as px
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    curves = [c for c in curves if c in table.columns and table[c].notna().any()]
    nrows = -(-len(curves) // 3)
    fig = make_subplots(rows=nrows, cols=3, subplot_titles=curves)
    colors = px.colors.qualitative.Plotly
    for ri, (run, d) in enumerate(table.groupby("run", sort=False)):
        for ci, c in enumerate(curves):
            fig.add_trace(go.Scatter(x=d["layer"], y=d[c], mode="lines+markers", name=str(run), legendgroup=str(run),
                                     showlegend=ci == 0, line=dict(color=colors[ri % len(colors)])),
                          row=ci // 3 + 1, col=ci % 3 + 1)
    fig.update_layout(height=300 * nrows, margin=dict(t=40, l=40, r=20, b=40))
    return layer_ticks(fig, sorted(set(table["layer"])))


def layer_ticks(fig, layers, most: int = 16):
    """Ticks at the compared layers only (no 2.5) when there are few, in probelab's one figure style
    (:func:`probelab.analysis.report.style`: y ticks with as many decimals as their spacing needs, so
    cosines 0.99991..0.99999 never read "1, 1, 1")."""
    from ..analysis.report import style

    layers = [int(x) for x in layers]
    if 0 < len(layers) <= most:
        fig.update_xaxes(tickmode="array", tickvals=layers)
    return style(fig)
