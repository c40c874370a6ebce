"""Features page: every latent of an SAE, searchable and filtered by firing density; one latent's dashboard
(density, histogram, contexts with left and right context, activation-range examples, output tokens, label).
Open a latent from the Concepts page, or with ``?latent=N`` in the address."""
import streamlit as st

from probelab.app_support import features as ft
from probelab.app_support import ui
from probelab.sae.density import DENSE_THRESHOLD

S = ui.settings()
st.title("SAE features")
st.caption("Each latent of the SAE, scanned once over held-out Wikipedia intros (attention sinks left out). Density = "
           f"share of tokens where the latent fires; a latent firing on more than {DENSE_THRESHOLD:.0%} of tokens is "
           "flagged dense. Output tokens: its decoder direction read through the final norm's gain and the unembedding.")

with st.sidebar:
    model_spec, sae_src = ui.model_and_sae(S, "ft", "model (name or folder)", "SAE: default | tiny | an sae-lens folder")
    lo, hi = st.select_slider("firing density", options=ft.DENSITY_STEPS, value=(0.0, 1.0), format_func=ft.percent,
                              key="ft_density")
    hide_dead = st.checkbox("hide dead latents", True, key="ft_hide_dead")


@st.cache_resource(show_spinner=False, max_entries=4)
def store_for(sae_src: str, model_spec: str):
    model, tok = ui.model_pair(model_spec)
    return ft.get_store(model, tok, ui.sae_for(sae_src, model_spec), sae_src)


store = None
with ui.guard("features"):
    with st.spinner("scanning held-out text with the SAE (once per SAE and model, then cached)"):
        store = store_for(sae_src, model_spec)

if store is not None:
    word = st.text_input("search labels, top tokens and promoted tokens", "", key="ft_search")
    table = ft.latent_table(store, word, lo, hi, hide_dead)
    st.caption(f"{len(table)} of {store.d_sae} latents · {store.n_tokens} tokens scanned · dead: "
               f"{int((store.counts == 0).sum())} · dense: {int((store.density > DENSE_THRESHOLD).sum())}")
    pick = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row", key="ft_table",
                        height=260)
    chosen = pick.selection.rows if pick is not None else []
    requested = None
    with ui.guard("latent"):
        requested = ft.latent_from_query(st.query_params.get("latent"), store.d_sae)
    if chosen:
        default = int(table["latent"].iloc[chosen[0]])
    elif requested is not None:
        default = requested
    else:
        default = int(table["latent"].iloc[0]) if len(table) else 0
    latent = int(st.number_input("latent id (click a row, type one, or open one from the Concepts page)",
                                 min_value=0, max_value=store.d_sae - 1, value=default, step=1,
                                 key=f"ft_latent_{default}"))
    dash = store.latent(latent)
    flag = " · **dense**" if dash["dense"] else (" · **dead** (never fired)" if dash["dead"] else "")
    st.subheader(f"latent {latent}: `{dash['label']}`")
    c1, c2, c3 = st.columns(3)
    c1.metric("density", f"{100 * dash['density']:.3f}%")
    c2.metric("firings", f"{dash['count']}")
    c3.metric("fires most on", ", ".join(map(repr, dash["top_tokens"])) or "-")
    st.markdown(f"SAE on residual index {dash['site']}{flag}")
    from probelab.sae.features import latent_html

    st.download_button("latent dashboard (HTML, opens offline)", latent_html(dash, f"SAE {sae_src} on {model_spec}:"),
                       file_name=f"latent-{latent}.html", mime="text/html", key="ft_download")
    left, right = st.columns([3, 2])
    with left:
        if dash["count"]:
            st.plotly_chart(ft.histogram_figure(dash), key="ft_hist")
    with right:
        st.markdown("**output tokens** (direct effect on the logits)")
        st.dataframe(ft.outputs_table(dash), hide_index=True, key="ft_outputs")
    if dash["top"]:
        top = dash["top"][0]["act"]
        st.markdown("**top-activating contexts** (the firing token outlined; shade = activation)")
        st.html(ft.contexts_html(dash["top"], top))
        st.markdown("**examples across activation ranges** (strongest range first)")
        for q in dash["quantiles"]:
            st.caption(f"activations {q['range'][0]:.3g} to {q['range'][1]:.3g} "
                       f"(quantiles {q['share'][0]:.0%}-{q['share'][1]:.0%} of its firings)")
            st.html(ft.contexts_html(q["examples"], top))
    else:
        st.info("This latent never fired on the scanned text (a dead latent).")
