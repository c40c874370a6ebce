"""Hidden-state alignment of one checkpoint: the paper's Figure 8, reproducible.

Two ways to get the two *sides* that are compared, at every layer, probe by probe:

- **branches** (no ``base``): a Control LLM checkpoint; its pretrained and expanded branch outputs at
  each merged layer, from one forward pass (streams ``pretrained`` / ``expanded``, and the
  interpolation weight ``weight`` where the interpolator has one);
- **models** (``base`` given): any fine-tuned model vs its base; the residual stream after every block
  (layers 1..L) of each, same tokenizer and hidden size required.

Side ``pretrained`` is always the reference (pretrained branch or base model), side ``expanded`` the
one that was trained (expanded branch or fine-tuned model); ``metrics.json`` records which is which.

>>> from probelab.analysis import run_alignment
>>> r = run_alignment("tiny-llama", base="tiny-llama", probes="analogies", umap=False, use_cache=False, progress=False)
>>> round(r.score, 6)  # a model against itself
1.0
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ProbelabError
from ..paths import atomic_dir, check_out
from . import cache, metrics, neighbors, pairs, score, umap_layers
from .sources import SideStates, check_finite, resolve_source, side_states

TOKENS = ("last", "mean")
COLUMN_NOTE = ("A = reference side (pretrained branch or base model), B = the other; means over probes. cosine: "
               "cos(A, B); euclid: |B - A|; rel.euclid: |B - A| / |A|; NN ret@k: share of each probe's k nearest "
               "neighbours on side A that are also its neighbours on side B; pair cos A/B: cosine between the two "
               "sentences of an analogy pair on each side; weight: mean interpolation weight w")
MAIN_TOKEN = "last"  # the paper reads the last token's state


@dataclass
class AlignmentInput:
    """The two sides' states at common layers, for both token selections."""
    mode: str                                  # "branches" | "models"
    layers: list[int]
    a: dict[str, np.ndarray]                   # token -> [L, N, d] (reference side)
    b: dict[str, np.ndarray]                   # token -> [L, N, d]
    weight: dict[str, np.ndarray] | None       # token -> [L, N] interpolation weight (branches only)
    labels: dict[str, str]                     # side -> description
    tokens: list[list[str]]
    cached: bool = False


@dataclass
class AlignmentResult:
    """Everything the analysis computed; ``write(out)`` puts it on disk, ``summary_table()`` shows it."""
    summary: dict
    layer_rows: list[dict]
    tables: dict[str, pd.DataFrame]
    out: Path | None = None
    timings: dict = field(default_factory=dict)
    states: dict | None = None  # side -> last-token states [L, N, d] (the Figure 8 grid), saved as states.safetensors

    @property
    def score(self) -> float:
        return self.summary["alignment_score"]

    def metrics_json(self) -> dict:
        return {**self.summary, "layers": self.layer_rows}

    def summary_table(self):
        """A rich table: one row per layer with the main numbers, the score in the caption."""
        from rich.table import Table

        comp = ", ".join(f"{k} {v:.3f}" for k, v in self.summary["components"].items() if v is not None)
        t = Table(title=f"alignment: {self.summary['checkpoint']} ({self.summary['mode']})",
                  caption=f"alignment score {self.score:.4f} ({comp})\n" + COLUMN_NOTE, caption_justify="left")
        cols = [("layer", "layer", "{}"), ("cosine", "cosine", "{:.4f}"), ("euclidean", "euclid", "{:.3f}"),
                ("relative_euclidean", "rel.euclid", "{:.4f}"), ("nn_retention", "NN ret@k", "{:.3f}"),
                ("pair_cosine_pretrained", "pair cos A", "{:.3f}"), ("pair_cosine_expanded", "pair cos B", "{:.3f}"),
                ("weight", "weight", "{:.3f}")]
        cols = [c for c in cols if any(r.get(c[0]) is not None for r in self.layer_rows)]
        for _, head, _ in cols:
            t.add_column(head, justify="right", min_width=len(head), no_wrap=True)  # never "rel.euc…" when piped
        for r in self.layer_rows:
            t.add_row(*[("-" if r.get(k) is None else fmt.format(r[k])) for k, _, fmt in cols])
        return t

    def print_summary(self) -> None:
        from rich.console import Console

        Console().print(self.summary_table())

    def write(self, out: str | Path, overwrite: bool = False) -> Path:
        """Write metrics.json, the CSV tables and report.html into ``out`` atomically
        (:func:`probelab.paths.atomic_dir`: ``overwrite`` replaces a folder probelab did not write)."""
        from .report import alignment_report

        out = Path(out)
        with atomic_dir(out, overwrite=overwrite, kind="alignment") as tmp:
            (tmp / "metrics.json").write_text(json.dumps(_jsonable(self.metrics_json()), indent=1))
            for name, df in self.tables.items():
                df.to_csv(tmp / f"{name}.csv", index=False)
            if self.states is not None:
                umap_layers.save_states(tmp / umap_layers.STATES_FILE, self.states, self.summary["layers_compared"])
            (tmp / "report.html").write_text(alignment_report(self), encoding="utf-8")
        self.out = out
        return out


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


# ---- inputs -------------------------------------------------------------------------------------
def resolve_probes(probes):
    """A probe-set name or file (``load_probes``), or a ready ``ProbeSet``-like object."""
    from ..probes import load_probes

    ps = load_probes(probes) if isinstance(probes, (str, Path)) else probes
    if len(ps.items) < 2:
        raise ProbelabError(f"probe set {getattr(ps, 'name', '?')!r} has {len(ps.items)} sentence(s);"
                            " alignment needs at least 2")
    return ps


def _branch_input(ck: SideStates) -> AlignmentInput:
    la, lb = ck.layers("pretrained"), ck.layers("expanded")
    if not la or not lb:
        raise ProbelabError(f"{ck.source.label} is not a Control LLM checkpoint (no pretrained/expanded branch"
                            " streams); pass --base BASE to compare it with its base model")
    layers = [l for l in la if l in lb]
    ia, ib = [la.index(l) for l in layers], [lb.index(l) for l in layers]
    weight = None
    if ck.layers("weight"):
        lw = ck.layers("weight")
        iw = [lw.index(l) for l in layers if l in lw]
        if len(iw) == len(layers):
            weight = {t: ck.get("weight", t)[iw].mean(-1) for t in TOKENS}
    exp = ck.meta.get("expansion") or {}
    return AlignmentInput(
        "branches", layers,
        {t: ck.get("pretrained", t)[ia] for t in TOKENS}, {t: ck.get("expanded", t)[ib] for t in TOKENS},
        weight, {"pretrained": "pretrained branch", "expanded": f"expanded branch ({exp.get('interpolation', 'control')})"},
        ck.meta["tokens"], ck.cached)


def _model_input(ck: SideStates, base: SideStates) -> AlignmentInput:
    d_ck, d_base = ck.meta["hidden_size"], base.meta["hidden_size"]
    if d_ck != d_base:
        raise ProbelabError(f"hidden sizes differ: {ck.source.label} has {d_ck}, base {base.source.label} has {d_base}")
    if ck.meta["tokens"] != base.meta["tokens"] or ck.meta.get("vocab_size") != base.meta.get("vocab_size"):
        raise ProbelabError(f"tokenizers differ: {ck.source.label} and base {base.source.label} tokenize the probes"
                            " differently; compare models that share a tokenizer")
    n_ck, n_base = len(ck.layers("resid")), len(base.layers("resid"))
    if n_ck != n_base:
        raise ProbelabError(f"numbers of layers differ: {ck.source.label} has {n_ck - 1}, base has {n_base - 1}")
    layers = ck.layers("resid")[1:]  # block outputs; index 0 (embeddings) is left out
    return AlignmentInput(
        "models", layers, {t: base.get("resid", t)[1:] for t in TOKENS}, {t: ck.get("resid", t)[1:] for t in TOKENS},
        None, {"pretrained": f"base model {base.source.label}", "expanded": f"checkpoint {ck.source.label}"},
        ck.meta["tokens"], ck.cached and base.cached)


def gather_input(ckpt, base=None, texts: list[str] | None = None, use_cache: bool = True, batch_size: int = 16,
                 progress: bool = False, device: str = "auto", dtype: str = "auto") -> AlignmentInput:
    """Capture (or read from the cache) the two sides for ``texts`` (models loaded on ``device`` in ``dtype``)."""
    ck = side_states(resolve_source(ckpt, device, dtype), texts, use_cache, batch_size, progress)
    if base is None:
        inp = _branch_input(ck)
    else:
        inp = _model_input(ck, side_states(resolve_source(base, device, dtype), texts, use_cache, batch_size, progress))
    for t in TOKENS:
        check_finite(inp.a[t], "pretrained" if inp.mode == "branches" else "base", inp.layers, texts)
        check_finite(inp.b[t], "expanded" if inp.mode == "branches" else "checkpoint", inp.layers, texts)
    return inp


# ---- analysis -----------------------------------------------------------------------------------
@dataclass
class AnalysisOptions:
    k: int | None = None         # neighbours for retention@k (None: 5, or n-1 for a smaller probe set)
    umap: bool = True            # compute the UMAP map (the slowest step)
    umap_metric: str = "cosine"  # UMAP / silhouette metric
    umap_normalize: bool = True  # L2-normalise states before UMAP (the paper normalises)
    n_neighbors: int = 15
    min_dist: float = 0.1
    reduce_dims: int = 50        # truncated SVD before UMAP (0: off)
    n_epochs: int = 200
    seed: int = 0
    use_cache: bool = True


def umap_coords(points: umap_layers.LayerPoints, opt: AnalysisOptions) -> np.ndarray:
    """UMAP coordinates of ``points`` through the content-addressed cache."""
    params = {"metric": opt.umap_metric, "seed": opt.seed, "n_neighbors": opt.n_neighbors, "min_dist": opt.min_dist,
              "reduce_dims": opt.reduce_dims, "n_epochs": opt.n_epochs}
    k = cache.key("umap", points.x, params) if opt.use_cache else None
    if k is not None:
        hit = cache.load_arrays("umap", k)
        if hit is not None:
            return hit[0]["coords"]
    coords = umap_layers.embed(points.x, **params)
    if k is not None:
        cache.save_arrays("umap", k, {"coords": coords}, params)
    return coords


def cached_silhouettes(points: umap_layers.LayerPoints, coords: np.ndarray | None, opt: AnalysisOptions) -> dict:
    """Layer silhouettes (O(n^2) in the number of states: ~1 s for 7,200) through the cache."""
    k = cache.key("silhouette", points.x, points.layer, points.side, coords, opt.umap_metric) if opt.use_cache else None
    if k is not None:
        hit = cache.load_arrays("silhouette", k)
        if hit is not None:
            return hit[1]
    out = umap_layers.silhouettes(points, coords, opt.umap_metric)
    if k is not None:
        cache.save_arrays("silhouette", k, {"done": np.zeros(1)}, out)
    return out


def analyze(inp: AlignmentInput, probe_set, opt: AnalysisOptions | None = None, checkpoint: str = "",
            base: str | None = None) -> AlignmentResult:
    """Compute every metric, table and the score from the two sides' states (no model, no I/O)."""
    opt = opt or AnalysisOptions()
    items = list(probe_set.items)
    texts = [p.text for p in items]
    n = len(items)
    if n < 2:
        raise ProbelabError("alignment needs at least 2 probe sentences")
    if opt.k is None:
        k = neighbors.default_k(n)
    elif not 1 <= opt.k <= n - 1:  # never clamped: a larger k would change what the score means
        raise ProbelabError(f"--k {opt.k} is out of range for {n} probe sentences: use 1..{n - 1}")
    else:
        k = opt.k
    idx = pairs.pair_index(items)
    L = len(inp.layers)

    per: dict[str, dict[str, np.ndarray]] = {}        # token -> metric -> [L, N]
    pair_m: dict[str, dict[str, np.ndarray]] = {}     # token -> metric -> [L, P]
    nn_lists: dict[tuple, tuple] = {}
    for t in TOKENS:
        a, b = inp.a[t], inp.b[t]
        per[t] = metrics.drift(a, b)
        for metric in neighbors.DISTANCES:
            ret, nn_a, nn_b = neighbors.neighbour_retention(a, b, k, metric)
            per[t]["nn_retention" if metric == "cosine" else f"nn_retention_{metric}"] = ret
            nn_lists[(t, metric)] = (nn_a, nn_b)
        if inp.weight is not None:
            per[t]["weight"] = inp.weight[t]
        pair_m[t] = pairs.stability(a, b, idx)

    main = {**per[MAIN_TOKEN], **pair_m[MAIN_TOKEN]}
    parts = score.components(main)
    summary = {
        "alignment_score": score.alignment_score(parts),
        "components": parts,
        "checkpoint": checkpoint, "base": base, "mode": inp.mode, "sides": inp.labels,
        "probes": getattr(probe_set, "name", "probes"), "n_probes": n, "n_pairs": len(idx), "k": k,
        "token": MAIN_TOKEN, "layers_compared": list(inp.layers),
    }

    coords = None
    points = umap_layers.stack_points(inp.a[MAIN_TOKEN], inp.b[MAIN_TOKEN], inp.layers, opt.umap_normalize)
    t0 = time.perf_counter()
    if opt.umap and len(points.x) >= 4:
        coords = umap_coords(points, opt)
    t1 = time.perf_counter()
    summary["silhouette"] = cached_silhouettes(points, coords, opt)
    timings = {"umap_s": t1 - t0, "silhouette_s": time.perf_counter() - t1}
    summary["umap"] = ({"metric": opt.umap_metric, "seed": opt.seed, "n_neighbors": opt.n_neighbors,
                        "min_dist": opt.min_dist, "reduce_dims": opt.reduce_dims, "n_epochs": opt.n_epochs,
                        "normalized": opt.umap_normalize} if coords is not None else None)

    layer_rows = _layer_rows(inp, per, pair_m)
    tables = _tables(inp, items, idx, per, pair_m, nn_lists, points, coords, k)
    summary["n_layers"] = L
    return AlignmentResult(summary, layer_rows, tables, timings=timings,
                           states={"pretrained": inp.a[MAIN_TOKEN], "expanded": inp.b[MAIN_TOKEN]})


def _mean_or_none(x):
    return None if x is None or np.size(x) == 0 else float(np.mean(x))


def _layer_rows(inp, per, pair_m) -> list[dict]:
    rows = []
    m, p = per[MAIN_TOKEN], pair_m[MAIN_TOKEN]
    for li, layer in enumerate(inp.layers):
        row = {"layer": int(layer)}
        for name in ("cosine", "euclidean", "euclidean_l2", "relative_euclidean", "norm_pretrained",
                     "norm_expanded", "norm_diff", "nn_retention", "nn_retention_euclidean"):
            row[name] = float(m[name][li].mean())
        for name in ("cosine", "euclidean", "norm_diff"):
            row[f"{name}_std"] = float(m[name][li].std())
        row["weight"] = float(m["weight"][li].mean()) if "weight" in m else None
        for name in ("pair_cosine_pretrained", "pair_cosine_expanded", "pair_cosine_change", "offset_consistency"):
            row[name] = _mean_or_none(p[name][li])
        mt = per["mean"]
        row["cosine_mean_token"] = float(mt["cosine"][li].mean())
        row["euclidean_mean_token"] = float(mt["euclidean"][li].mean())
        row["euclidean_l2_mean_token"] = float(mt["euclidean_l2"][li].mean())
        rows.append(row)
    return rows


def _grid(*sizes):
    """Flattened index grids (C order) for a table with one row per combination."""
    return [g.ravel() for g in np.meshgrid(*[np.arange(n) for n in sizes], indexing="ij")]


def _tables(inp, items, idx, per, pair_m, nn_lists, points, coords, k) -> dict[str, pd.DataFrame]:
    layers = np.asarray(inp.layers)
    L, N = len(layers), len(items)
    texts = np.array([p.text for p in items], dtype=object)
    cats = np.array([p.category for p in items], dtype=object)
    pids = np.array([p.pair_id for p in items], dtype=object)
    psides = np.array([p.side for p in items])
    frames = []
    for t in TOKENS:  # one row per (token, layer, probe)
        li, pi = _grid(L, N)
        frames.append(pd.DataFrame({"token": t, "layer": layers[li], "probe": pi, "text": texts[pi],
                                    "category": cats[pi], "pair_id": pids[pi], "pair_side": psides[pi],
                                    **{name: v.ravel() for name, v in per[t].items()}}))
    probe_df = pd.concat(frames, ignore_index=True)
    frames = []
    for t in TOKENS:  # one row per (token, layer, metric): mean and spread over probes / pairs
        for name, v in {**per[t], **pair_m[t]}.items():
            if v.shape[1] == 0:
                continue
            s = metrics.summarize(v, axis=1)
            frames.append(pd.DataFrame({"token": t, "layer": layers, "metric": name, **s}))
    layer_df = pd.concat(frames, ignore_index=True)
    frames = []
    P = len(idx)
    for t in TOKENS:  # one row per (token, layer, pair)
        li, pj = _grid(L, P)
        frames.append(pd.DataFrame({"token": t, "layer": layers[li], "pair_id": np.array(idx.pair_ids, dtype=object)[pj],
                                    "category": np.array(idx.categories, dtype=object)[pj],
                                    "sentence_0": texts[idx.first][pj], "sentence_1": texts[idx.second][pj],
                                    **{name: v.ravel() for name, v in pair_m[t].items()}}))
    pair_df = pd.concat(frames, ignore_index=True)
    frames = []
    for (t, metric), (nn_a, nn_b) in nn_lists.items():  # one row per (metric, layer, probe, side, rank)
        if t != MAIN_TOKEN:
            continue
        for side, nn in (("pretrained", nn_a), ("expanded", nn_b)):
            li, pi, r = _grid(L, N, k)
            j = nn.ravel()
            frames.append(pd.DataFrame({"token": t, "metric": metric, "layer": layers[li], "probe": pi,
                                        "text": texts[pi], "side": side, "rank": r + 1, "neighbor": j,
                                        "neighbor_text": texts[j]}))
    tables = {"layers": layer_df, "probes": probe_df, "pairs": pair_df, "neighbors": pd.concat(frames, ignore_index=True)}
    if coords is not None:
        tables["umap"] = pd.DataFrame({
            "side": np.where(points.side == 0, "pretrained", "expanded"), "layer": points.layer,
            "probe": points.probe, "text": texts[points.probe], "category": cats[points.probe],
            "x": coords[:, 0], "y": coords[:, 1]})
    return tables


# ---- one call ---------------------------------------------------------------------------------
def run_alignment(ckpt, base=None, probes="analogies", out: str | Path | None = None, *,
                  options: AnalysisOptions | None = None, batch_size: int = 16, progress: bool = True,
                  overwrite: bool = False, device: str = "auto", dtype: str = "auto",
                  **option_kwargs) -> AlignmentResult:
    """Align ``ckpt`` (a Control LLM checkpoint, or a fine-tune of ``base``) on a probe set.

    ``ckpt`` / ``base``: a model name, a folder, or an in-memory ``(model, tokenizer)``. Keyword options
    (``k``, ``umap``, ``umap_metric``, ``seed``, ``use_cache``, ...) go to :class:`AnalysisOptions`.
    Writes ``out`` (metrics.json, CSVs, report.html) atomically when given; nothing is written if any
    step fails.
    """
    opt = options or AnalysisOptions(**option_kwargs)
    t0 = time.perf_counter()
    if out is not None:  # refuse an unusable --out before the work
        check_out(out, "alignment", overwrite)
    ps = resolve_probes(probes)
    inp = gather_input(ckpt, base, ps.texts, opt.use_cache, batch_size, None if progress else False, device, dtype)
    t1 = time.perf_counter()
    label = lambda s: s if isinstance(s, (str, Path)) else resolve_source(s).label  # noqa: E731
    res = analyze(inp, ps, opt, checkpoint=str(label(ckpt)), base=None if base is None else str(label(base)))
    t2 = time.perf_counter()
    if out is not None:
        res.write(out, overwrite=overwrite)
    t3 = time.perf_counter()
    res.timings = {"capture_s": t1 - t0, "analysis_s": t2 - t1, **res.timings, "write_s": t3 - t2,
                   "total_s": t3 - t0, "captures_cached": inp.cached}
    return res
