"""Alignment page: two sides' hidden states compared layer by layer (Control LLM, Figure 8).

Opens on the embedded model expanded at initialisation (panel a: both branches identical), so it is
useful with no set-up; the sidebar picks checkpoints, saved alignments, probes and options.
"""
import dataclasses
from pathlib import Path

import streamlit as st

from probelab.analysis import AnalysisOptions
from probelab.analysis.report import drift_figure, pair_figure, style, umap_figure
from probelab.app_support import alignment as al
from probelab.app_support import sources, training, ui
from probelab.models.control import INTERPOLATOR_NAMES
from probelab.probes import available_probe_sets, load_probes

AT_INIT, CHECKPOINTS, SAVED = "At-init expansion (panel a)", "Checkpoints", "Saved alignments"
BRANCHES, BASE = "its pretrained branch (Control LLM)", "a base model, layer by layer"
SET, PASTE = "probe set", "paste sentences"
DEFAULT_PASTE = "king is to queen | man is to woman\nParis is to France | Tokyo is to Japan\nswim is to swam | fly is to flew"

S = ui.settings()
st.title("Hidden-state alignment")
st.caption("Two sides compared at every layer on probe sentences: a Control LLM's pretrained vs expanded branch, "
           "or a fine-tuned model vs its base. Side A is the reference (circles), side B the trained one (diamonds).")


@st.cache_data(ttl=30, show_spinner=False)
def found(roots):
    return sources.discover(roots, exclude=[al.store_root()])


items = []
with ui.guard("searching for checkpoints"):
    items = found(S.roots)
models = [f for f in items if f.kind != "alignment"]
alignments = [f for f in items if f.kind == "alignment"]

# ---- sidebar: what to align ---------------------------------------------------------------------
with st.sidebar:
    st.header("Compare")
    source = st.radio("source", [AT_INIT, CHECKPOINTS, SAVED], key="source",
                      help="At-init: the base model expanded as a Control LLM, untrained (cosine 1 everywhere). "
                           f"Checkpoints and saved alignments are searched in: {', '.join(map(str, S.roots))}")
    spec = {"source": source}
    if source == AT_INIT:
        spec["base"] = st.text_input("base model", S.model, key="at_base")
        spec["n"] = int(st.number_input("expanded layers N", 1, 128, 2 if S.model.startswith("tiny-") else 6,
                                        key="at_n"))
        spec["interp"] = st.selectbox("interpolator", INTERPOLATOR_NAMES, key="at_interp")
        if training.available():
            with st.expander("train it: CPU smoke run"), ui.guard("training"):
                run = training.status()
                st.caption("Control LLM Lerp6-MSE on the embedded model learning 3-digit addition, 30 steps "
                           f"(a few minutes on a laptop CPU); writes `{training.SMOKE_OUT}/final`, then listed "
                           "under *Checkpoints*.")
                if run.state == "running":
                    st.info("training in the background...")
                    st.code(run.log_tail[-600:] or "(no output yet)", language=None)
                    st.button("refresh", key="train_refresh")
                elif run.state == "finished":
                    st.success(f"finished: {run.final}")
                elif run.state == "failed":
                    st.error("the run failed: " + (run.log_tail.strip().splitlines() or ["(no output)"])[-1])
                if run.state != "running" and st.button("start the CPU smoke run", key="train_go"):
                    training.start(Path.cwd() / training.SMOKE_OUT)
                    st.rerun()
    elif source == CHECKPOINTS:
        labels = {f.label: str(f.path) for f in models}
        picked = st.multiselect("checkpoints found", list(labels), key="ck_pick")
        typed = st.text_area("or checkpoint folders, one per line", key="ck_typed", height=80)
        spec["paths"] = [labels[p] for p in picked] + [t.strip() for t in typed.splitlines() if t.strip()]
        mode = st.radio("compare each with", [BRANCHES, BASE], key="ck_mode")
        spec["base"] = st.text_input("base model (name or folder)", S.model, key="ck_base") if mode == BASE else None
    else:
        labels = {sources.describe_alignment(f.path): str(f.path) for f in alignments}
        picked = st.multiselect("saved alignments (probelab align / demo)", list(labels), key="sv_pick",
                                default=list(labels)[:1])
        typed = st.text_input("or an alignment folder", key="sv_typed")
        spec["folders"] = [labels[p] for p in picked] + ([typed.strip()] if typed.strip() else [])
    if source != SAVED:
        st.header("Probes")
        how = st.radio("probes", [SET, PASTE], key="probe_how", horizontal=True, label_visibility="collapsed")
        if how == SET:
            spec["probes"] = ("set", st.selectbox("probe set", list(available_probe_sets()) or ["analogies"],
                                                  key="probe_set"))
        else:
            spec["probes"] = ("text", st.text_area("one sentence per line; 'a | b' makes an analogy pair",
                                                   DEFAULT_PASTE, key="probe_text", height=140))
        with st.expander("analysis options"):
            spec["k"] = int(st.number_input("neighbours k", 1, 50, 5, key="opt_k"))
            spec["umap"] = st.toggle("UMAP map", S.umap, key="opt_umap")
            spec["metric"] = st.selectbox("UMAP / silhouette metric", ["cosine", "euclidean"], key="opt_metric")
            spec["seed"] = int(st.number_input("UMAP seed", 0, 2**31 - 1, 0, key="opt_seed"))
            spec["cache"] = st.checkbox("reuse cached captures and results", True, key="opt_cache")
    if st.button("Align", type="primary", key="align_go", width="stretch") or "align_request" not in st.session_state:
        st.session_state["align_request"] = spec
request = st.session_state["align_request"]


# ---- compute (or read) the results --------------------------------------------------------------
def compute(req) -> dict:
    results = {}
    if req["source"] == SAVED:
        if not req["folders"]:
            st.info("No saved alignment chosen. Write one with `probelab align CKPT --out DIR` (or `make demo`), "
                    "or pick *At-init expansion* above.")
        for folder in req["folders"]:
            with ui.guard(folder):
                p = Path(folder).expanduser()
                stamp = p / "metrics.json"
                results[p.name] = ui.stored_alignment(str(p), stamp.stat().st_mtime if stamp.is_file() else 0.0)
        return results
    kind, value = req["probes"]
    probe_set = load_probes(value) if kind == "set" else al.probes_from_text(value)
    options = AnalysisOptions(k=req["k"], umap=req["umap"], umap_metric=req["metric"], seed=req["seed"],
                              use_cache=req["cache"])
    if req["source"] == AT_INIT:
        targets = [al.AtInit(req["base"].strip(), req["n"], req["interp"])]
    else:
        if not req["paths"]:
            st.info("Pick a checkpoint found on disk or type a folder, then press **Align**.")
        targets = [al.Checkpoint(p, req["base"].strip() if req["base"] else None) for p in req["paths"]]
    for target in targets:
        with ui.guard(target.label):
            if len(targets) == 1 and options.umap and not ui.stored(target, probe_set, options):
                # the UMAP map is the slowest step: everything else first, the map after the page is drawn
                fast = dataclasses.replace(options, umap=False)
                results[target.label] = ui.alignment(target, probe_set, fast, store=False)
                deferred[target.label] = (target, probe_set, options)
            else:
                results[target.label] = ui.alignment(target, probe_set, options)
    return results


results = {}
deferred = {}  # name -> (target, probes, options) whose UMAP map is computed after the page is drawn
placeholders = {}  # name -> (UMAP tab placeholder, downloads placeholder, widget key prefix)
with ui.guard("probes"):
    results = compute(request)


# ---- show ---------------------------------------------------------------------------------------
def fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def show_one(name: str, res, key: str) -> None:
    s = res.summary
    cols = st.columns(5)
    cols[0].metric("alignment score", fmt(s["alignment_score"]))
    for col, (comp, v) in zip(cols[1:], s["components"].items()):
        col.metric(comp, fmt(v))
    st.caption(f"**{name}** · mode `{s['mode']}` · side A = {s['sides']['pretrained']} · side B = "
               f"{s['sides']['expanded']} · probes `{s['probes']}` ({s['n_probes']} sentences, {s['n_pairs']} pairs) · "
               f"layers {', '.join(map(str, s['layers_compared']))} · {s['token']}-token states")
    tabs = st.tabs(["Drift curves", "UMAP", "Nearest neighbours", "Pair similarity", "Per-layer numbers", "Downloads"])
    rows = res.layer_rows
    with tabs[0]:
        fig = drift_figure(rows, any(r.get("weight") is not None for r in rows))
        st.plotly_chart(al.layer_ticks(fig, s["layers_compared"]), theme=None, key=f"{key}-drift")
    with tabs[1]:
        if name in deferred:
            ph_umap = st.empty()
            ph_umap.info("Fitting the UMAP map (the slowest step; it appears here when done)...")
        else:
            umap_tab(res, key)
    with tabs[2]:
        c1, c2 = st.columns(2)
        layer = c1.selectbox("layer", s["layers_compared"], index=len(s["layers_compared"]) - 1, key=f"{key}-nnl")
        metric = c2.selectbox("distance", ["cosine", "euclidean"], key=f"{key}-nnm")
        with ui.guard("neighbours"):
            nn = al.neighbour_table(res, int(layer), metric)
            if "retention@k" in nn:
                nn = nn.sort_values("retention@k", kind="stable")
            st.caption(f"{len(nn)} probes, lowest neighbour retention first (scroll for the rest)")
            st.dataframe(nn, hide_index=True, height=390, key=f"{key}-nn")
    with tabs[3]:
        if len(res.tables.get("pairs", [])):
            st.plotly_chart(style(pair_figure(res.tables["pairs"])), theme=None, key=f"{key}-pairs")
        else:
            st.info("No analogy pairs in these probes (paste lines as 'a | b' to make pairs).")
    with tabs[4]:
        st.dataframe(al.layer_frame(res), hide_index=True, key=f"{key}-layers")
    with tabs[5]:
        if name in deferred:
            placeholders[name] = (ph_umap, st.empty(), key)
            placeholders[name][1].info("The files are offered once the UMAP map is done.")
        else:
            downloads(res, key)


def umap_tab(res, key: str) -> None:
    if "umap" in res.tables:
        color = st.radio("colour by", ["layer", "side", "category"], horizontal=True, key=f"{key}-umapc")
        st.plotly_chart(style(umap_figure(res.tables["umap"], color, f"UMAP, coloured by {color} (hover: sentence)")),
                        theme=None,
                        key=f"{key}-umap")
        sil = res.summary.get("silhouette") or {}
        st.caption("silhouette of layer labels: " + ", ".join(f"{k} {fmt(v)}" for k, v in sil.items()))
    else:
        st.info("UMAP not computed (turn it on under *analysis options*).")


def downloads(res, key: str) -> None:
    files = al.export_files(res)
    cols = st.columns(4)
    for i, (fname, path) in enumerate(files.items()):
        cols[i % 4].download_button(fname, data=path.read_bytes, file_name=fname, on_click="ignore",
                                    mime=al.MIME.get(path.suffix, "application/octet-stream"), key=f"{key}-dl-{fname}")


if len(results) > 1:
    st.subheader(f"{len(results)} checkpoints side by side")
    with ui.guard("comparison"):
        table, scores = al.compare_runs(results)
        st.dataframe(scores, hide_index=True, key="cmp-scores")
        st.plotly_chart(al.compare_figure(table), theme=None, key="cmp-curves")
        st.markdown("**Figure 8 grid**: one row per checkpoint (the first 4), one column per layer; each column is "
                    "one UMAP fit on every row's states, so its panels share coordinates (open circles: side A, "
                    "diamonds: side B, grey lines join a sentence's two states, colour: category).")
        shown = dict(list(results.items())[:4])
        common = al.common_layers(shown)
        if not common:
            st.info("These checkpoints compare no layer in common, so there is no grid to draw.")
        else:
            from probelab.analysis.umap_layers import pick_layers

            cols_pick = st.multiselect("grid layers (columns)", common, default=pick_layers(common), key="cmp-grid-layers")
            if not cols_pick:
                st.info("Pick at least one layer for the grid.")
            else:
                with ui.guard("Figure 8 grid"), st.spinner("fitting one UMAP per layer"):
                    st.plotly_chart(style(al.figure8_figure(shown, sorted(cols_pick))), theme=None, key="cmp-grid")
        with_map = [(n, r) for n, r in results.items() if "umap" in r.tables]
        if with_map:
            cols = st.columns(min(3, len(with_map)))
            for i, (n, r) in enumerate(with_map):
                fig = umap_figure(r.tables["umap"], "layer", n)
                fig.update_layout(height=380, showlegend=False)
                cols[i % len(cols)].plotly_chart(style(fig), theme=None, key=f"cmp-umap-{i}")
        st.download_button("compare.csv", data=table.to_csv(index=False).encode(), file_name="compare.csv",
                           mime="text/csv", on_click="ignore", key="cmp-dl")
    chosen = st.selectbox("details of", list(results), key="detail_pick")
    show_one(chosen, results[chosen], "detail")
elif results:
    name, res = next(iter(results.items()))
    show_one(name, res, "one")


# ---- the UMAP maps put off above: fitted now that everything else is on the page -----------------
for name, (target, probe_set, options) in deferred.items():
    if name not in placeholders:
        continue
    ph_umap, ph_dl, key = placeholders[name]
    with ui.guard(f"UMAP map of {name}"):
        with ph_umap.container(), st.spinner("fitting the UMAP map"):
            full = ui.with_umap(target, probe_set, options, results[name])
        with ph_umap.container():
            umap_tab(full, key)
        with ph_dl.container():
            downloads(full, key)
