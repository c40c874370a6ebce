"""Steering page: one prompt generated with and without steering by a concept, side by side."""
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
                                           "SAE (not used for CoCoMix): default | tiny | folder")
    max_new = st.slider("new tokens", 1, 100, 24, key="st_new")

prompt = st.text_area("prompt", DEFAULT_PROMPT, key="st_prompt", height=80)
c1, c2 = st.columns(2)
concept = int(c1.number_input("concept id", min_value=0, value=0, step=1, key="st_concept"))
factor = c2.number_input("factor", -1000.0, 1000.0, 8.0, 1.0, key="st_factor",
                         help="CoCoMix: the paper steers with -10..10. SAE direction: in units of the latent's "
                              "activation; try values like its top activations (Concepts page)")
go = st.button("Generate", type="primary", key="st_go")


@st.cache_data(show_spinner=False, max_entries=64)
def run(model_spec: str, sae_src: str, prompt: str, concept: int, factor: float, max_new: int) -> dict:
    model, tok = ui.model_pair(model_spec)
    sae = None if cc.is_cocomix(model) else ui.sae_for(sae_src, model_spec)
    with ui.model_lock():  # steering changes the shared model while it generates
        return steering.steer_pair(model, tok, prompt, {concept: factor}, sae=sae, max_new_tokens=max_new)


if go or st.session_state.get("st_done"):
    st.session_state["st_done"] = True
    with ui.guard("steering"):
        with st.spinner("generating twice (steered and plain)"):
            out = run(model_spec, sae_src, prompt, concept, float(factor), int(max_new))
        st.caption(f"concept {concept} x {factor:g}: {out['how']}")
        left, right = st.columns(2)
        with left:
            st.markdown("**unsteered**")
            st.code(prompt + out["unsteered"], language=None, wrap_lines=True)
        with right:
            st.markdown(f"**steered** (concept {concept}, factor {factor:g})")
            st.code(prompt + out["steered"], language=None, wrap_lines=True)
        if out["steered"] == out["unsteered"]:
            st.info("Steering did not change the greedy continuation; try a larger factor or another concept.")
else:
    st.info("Pick a concept id (see the Concepts page for ids and labels) and a factor, then press **Generate**.")
