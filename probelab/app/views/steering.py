"""Steering page: one prompt generated with and without steering by a concept, side by side, and a
dose-response sweep over steering scales (table, plot, offline HTML download)."""
import streamlit as st

from probelab.app_support import concepts as cc
from probelab.app_support import steering, ui

DEFAULT_PROMPT = "The weather today is"

S = ui.settings()
st.title("Steering by a concept")
st.caption("CoCoMix model: the concept's predicted logit is multiplied by the factor before TopK (paper Sec. 4.4). "
           "Any other model: factor x the concept's SAE decoder direction is added to the residual stream at the "
           "SAE's layer (the factor is in units of the latent's activation). Greedy decoding.")

with st.sidebar:
    model_spec, sae_src = ui.model_and_sae(S, "st", "model (name, folder, or a CoCoMix folder)",
                                           "SAE (for CoCoMix: its teacher's, for labels): default | tiny | folder")
    max_new = st.slider("new tokens", 1, 100, 24, key="st_new")


def setup() -> dict | None:
    """The model kind, the number of concepts, and where labels come from; ``None`` (with a message
    saying what is missing) when the page cannot steer yet."""
    with st.spinner("loading the model"):
        model, _ = ui.model_pair(model_spec)
    if cc.is_cocomix(model):
        teacher, sae = cc.teacher_of(model, S.model, sae_src or S.sae)
        return {"cocomix": True, "n": int(model.cocomix.n_concepts), "labels_from": (sae, teacher)}
    if not sae_src:
        st.info("This model is not a CoCoMix model: enter an SAE in the sidebar (`default`, `tiny` for the tiny "
                "models, or an sae-lens folder) to steer its residual stream.")
        return None
    with st.spinner("loading the SAE"):
        sae = ui.sae_for(sae_src, model_spec)
    return {"cocomix": False, "n": int(sae.cfg.d_sae), "labels_from": (sae_src, model_spec)}


def label_of(info: dict, concept: int) -> str:
    """The concept's label (built once per SAE over the labelling corpus), or why there is none."""
    try:
        with st.spinner("building concept labels (once per SAE)"):
            labels = ui.labels_for(*info["labels_from"])
    except Exception as e:  # noqa: BLE001 - a missing teacher/SAE must not hide the steering itself
        return f"(no label: {ui.message(e)})"
    if len(labels) != info["n"]:
        return f"(no label: the SAE has {len(labels)} latents, the model has {info['n']} concepts)"
    return labels.label(concept)


@st.cache_data(show_spinner=False, max_entries=64)
def run(model_spec: str, sae_src: str, prompt: str, concept: int, factor: float, max_new: int) -> dict:
    model, tok = ui.model_pair(model_spec)
    sae = None if cc.is_cocomix(model) else ui.sae_for(sae_src, model_spec)
    with ui.model_lock():  # steering changes the shared model while it generates
        return steering.steer_pair(model, tok, prompt, {concept: factor}, sae=sae, max_new_tokens=max_new)


@st.cache_data(show_spinner=False, max_entries=16)
def run_sweep(model_spec: str, sae_src: str, prompt: str, concept: int, scales: tuple, max_new: int,
              targets: tuple, label: str):
    model, tok = ui.model_pair(model_spec)
    sae = None if cc.is_cocomix(model) else ui.sae_for(sae_src, model_spec)
    with ui.model_lock():
        return steering.sweep(model, tok, prompt, concept, list(scales), sae=sae, max_new_tokens=max_new,
                              targets=list(targets), label=label)


info = None
with ui.guard("steering"):
    info = setup()

if info is not None:
    prompt = st.text_area("prompt", DEFAULT_PROMPT, key="st_prompt", height=80)
    c1, c2 = st.columns(2)
    concept = int(c1.number_input(f"concept id (0..{info['n'] - 1}; ids and labels: Concepts page)", min_value=0,
                                  value=0, step=1, key="st_concept"))
    neutral = 1.0 if info["cocomix"] else 0.0
    factor = c2.number_input("factor", -1000.0, 1000.0, 8.0, 1.0, key="st_factor",
                             help="CoCoMix: the paper steers with -10..10 (1 = unsteered). SAE direction: in units "
                                  "of the latent's activation (0 = unsteered); try values like its top activations "
                                  "(Concepts page)")
    if concept >= info["n"]:
        st.error(f"concept id {concept} is out of range 0..{info['n'] - 1}")
        st.stop()
    label = label_of(info, concept)
    st.markdown(f"**concept {concept}**: `{label}`")
    if info["cocomix"]:
        st.caption(f"labels from its teacher: SAE `{info['labels_from'][0]}` on `{info['labels_from'][1]}`")

    go = st.button("Generate", type="primary", key="st_go")
    if go or st.session_state.get("st_done"):
        st.session_state["st_done"] = True
        with ui.guard("steering"):
            with st.spinner("generating twice (steered and plain)"):
                out = run(model_spec, sae_src, prompt, concept, float(factor), int(max_new))
            st.caption(f"concept {concept} ({label}) x {factor:g}: {out['how']}")
            left, right = st.columns(2)
            with left:
                st.markdown("**unsteered**")
                st.code(prompt + out["unsteered"], language=None, wrap_lines=True)
            with right:
                st.markdown(f"**steered** (concept {concept} `{label}`, factor {factor:g})")
                st.code(prompt + out["steered"], language=None, wrap_lines=True)
            if out["steered"] == out["unsteered"]:
                st.info("Steering did not change the greedy continuation; try a larger factor or another concept.")
    else:
        st.info("Choose a factor and press **Generate**, or run a sweep below.")

    st.subheader("Dose-response sweep")
    st.caption("The same concept at several scales: its activation at the SAE site (CoCoMix: its steered logit), "
               "the probability of target tokens, and the fluency cost (KL of the next-token distribution against "
               "the unsteered model, perplexity of the steered text under the unsteered model).")
    s1, s2, s3 = st.columns(3)
    start = s1.number_input("from", -1000.0, 1000.0, neutral, 1.0, key="st_sw_start")
    stop = s2.number_input("to", -1000.0, 1000.0, 80.0 if not info["cocomix"] else 10.0, 1.0, key="st_sw_stop")
    n = int(s3.number_input("scales", 1, 21, 5, 1, key="st_sw_n"))
    targets = steering.parse_targets(st.text_input("target tokens, separated by | (a word needs its leading "
                                                   "space: ` Paris`)", "", key="st_sw_targets"))
    if st.button("Run sweep", key="st_sw_go") or st.session_state.get("st_sw_done"):
        st.session_state["st_sw_done"] = True
        with ui.guard("sweep"):
            from probelab.steering_sweep import COLUMN_NOTES, parse_sweep, sweep_figure, sweep_html

            scales = tuple(parse_sweep(f"{start}:{stop}:{n}"))
            with st.spinner(f"generating at {len(scales)} scales"):
                result = run_sweep(model_spec, sae_src, prompt, concept, scales, int(max_new), tuple(targets), label)
            from probelab.analysis.report import style

            st.plotly_chart(style(sweep_figure(result)), theme=None, key="st_sw_fig")
            st.dataframe(steering.sweep_frame(result), hide_index=True, key="st_sw_table")
            st.caption(" · ".join(f"**{k}**: {v}" for k, v in COLUMN_NOTES.items()
                                  if k != ("logit" if result.kind == "sae" else "activation")
                                  and (k != "chosen" or result.kind == "cocomix")))
            st.download_button("download the sweep as HTML (offline)", sweep_html(result, model_spec),
                               file_name=f"sweep-concept{concept}.html", mime="text/html", key="st_sw_dl")
