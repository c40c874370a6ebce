"""Concepts page: per-token SAE concepts (activation and attribution) or a CoCoMix model's predictions.

Hover a token for its top concepts with labels; pick a concept (from the table or by id) to see the
contexts where it fires hardest and where it ranks in this text.
"""
import streamlit as st

from probelab.app_support import concepts as cc
from probelab.app_support import ui
from probelab.errors import ProbelabError
from probelab.sae.labels import quick_note
from probelab.sae import VARIANTS
from probelab.sae.inspect import ORDERS, score_meaning

DEFAULT_TEXT = "The capital of France is Paris, and the capital of Japan is Tokyo."

S = ui.settings()
st.title("Concepts per token")
st.caption("SAE concepts of the model's residual stream at every token, ranked by activation and by attribution "
           "score (CoCoMix Eq. 1: activation x gradient of the next-token loss); for a CoCoMix model, the concepts "
           "it predicts itself. Hover a token for its concepts and their labels.")

with st.sidebar:
    model_spec, sae_src = ui.model_and_sae(S, "cc", "model (name or folder)",
                                           "SAE: default | tiny | an sae-lens folder")
    top = st.slider("concepts per token", 1, 8, 3, key="cc_top")
    variant = st.selectbox("attribution variant", list(VARIANTS), key="cc_variant",
                           help="official: TopK post-activation x grad of the sequence loss (the released code); "
                                "paper: pre-activation x grad of the next-token loss (Eq. 1)")
    order = st.selectbox("attribution order", list(ORDERS), key="cc_order",
                         format_func=lambda o: f"{o}: {cc.ORDER_HELP[o]}",
                         help="A positive score means the concept raises the loss (removing it would lower "
                              "the loss by about the score); a negative one that it supports the prediction.")
    with_labels = st.checkbox("concept labels (computed over the corpus once per SAE)", True, key="cc_labels")
    with_density = st.checkbox("firing density (held-out text, once per SAE)", True, key="cc_density")
    hide_dense = st.checkbox("hide dense latents (firing on >10% of tokens)", False, key="cc_hide_dense",
                             disabled=not with_density)

text = st.text_area("text", DEFAULT_TEXT, key="cc_text", height=90)


@st.cache_data(show_spinner=False, max_entries=32)
def inspect(model_spec: str, sae_src: str, text: str, top: int, variant: str, with_labels: bool,
            default_teacher: str, order: str = "signed", with_density: bool = True, hide_dense: bool = False) -> dict:
    """Per-token concepts, and where their labels come from (``labels_from``: SAE source, model spec)."""
    model, tok = ui.model_pair(model_spec)
    if cc.is_cocomix(model):  # its concepts are latents of its teacher's SAE
        teacher, sae = cc.teacher_of(model, default_teacher, sae_src)
        labels = ui.labels_for(sae, teacher) if with_labels else None
        if labels is not None and len(labels) != model.cocomix.n_concepts:
            raise ProbelabError(f"the SAE {sae!r} has {len(labels)} latents but this CoCoMix model predicts "
                                f"{model.cocomix.n_concepts} concepts; turn labels off or give its teacher's SAE")
        with ui.model_lock():
            rows = cc.cocomix_rows(model, tok, text, top=top, labels=labels)
        return {"kind": "cocomix", "labels_from": (sae, teacher), **rows}
    labels = ui.labels_for(sae_src, model_spec) if with_labels else None
    sae = ui.sae_for(sae_src, model_spec)
    with ui.model_lock():  # not while another session steers this model
        density = cc.get_density(model, tok, sae, labels) if with_density else None
        rows = cc.sae_rows(model, tok, sae, text, top, variant, labels, order=order, density=density,
                           hide_dense=hide_dense and with_density)
    return {"kind": "sae", "labels_from": (sae_src, model_spec), **rows}


def highlight(rows, key: str, caption: str, values=None) -> None:
    values = cc.top_values(rows, key) if values is None else values
    st.markdown(f"**{caption}**" + " <small>(shade scale leaves out the first token, an attention sink)</small>",
                unsafe_allow_html=True)
    st.html(cc.token_html([r["token"] for r in rows], values, cc.hover_titles(rows, key), skip_first=True))


def concept_details(concept_id: int, rows, keys, labels_from) -> None:
    """Label, top-activating contexts and promoted tokens of one concept, and where it ranks in this text."""
    labels = ui.labels_for(*labels_from)
    info = cc.concept_info(labels, concept_id)
    st.markdown(f"#### concept {info.id}: `{info.label}`")
    st.caption(f"active on {100 * info.frequency:.2f}% of corpus tokens · fires most on: "
               f"{', '.join(map(repr, info.top_tokens)) or '-'} · promotes: {', '.join(map(repr, info.promoted)) or '-'}")
    st.page_link("views/features.py", label=f"open concept {info.id} on the Features page (full dashboard)",
                 query_params={"latent": str(info.id), "sae": labels_from[0], "model": labels_from[1]})
    if info.contexts:
        st.markdown("top-activating contexts (the firing token in **[[ ]]**)")
        st.dataframe([{"context": c["text"], "activation": c["act"]} for c in info.contexts], hide_index=True,
                     key="cc_contexts")
    else:
        st.info("This concept never fired on the labelling corpus (a dead latent).")
    for key in keys:
        highlight(rows, key, f"where concept {info.id} ranks in this text ({cc.RANKINGS[key]})",
                  cc.concept_values(rows, info.id, key))


result = None
with ui.guard("concepts"):
    with st.spinner("loading the model and SAE, computing concepts (labels: once per SAE)"):
        result = inspect(model_spec, sae_src, text, top, variant, with_labels, S.model, order, with_density,
                         hide_dense)

if result is not None:
    rows = result["tokens"]
    if result["kind"] == "cocomix":
        keys = ["by_prediction"]
        st.success(f"CoCoMix model: {result['n_concepts']} concepts, TopK {result['topk']} per token; "
                   "showing the highest predicted concept logits.")
        highlight(rows, "by_prediction", "predicted concepts (shade: top concept logit)")
    else:
        keys = ["by_activation", "by_attribution"]
        v = result["variant"]
        st.caption(f"{result['n_tokens']} tokens{' (truncated)' if result['truncated'] else ''} · SAE on resid "
                   f"{result['site']} · attribution: {v['activation']}-activation x grad of the {v['loss']} loss, "
                   f"{v['sign']}, ranked {result.get('order', 'signed')}")
        st.info(result.get("score_meaning") or score_meaning(v["loss"]))
        if with_labels:
            note = quick_note(ui.labels_for(*result["labels_from"]), result["labels_from"][0])
            if note:
                st.caption(note)
        if result.get("dense_threshold"):
            st.caption(f"DENSE = the latent fires on more than {100 * result['dense_threshold']:.0f}% of held-out "
                       "tokens (it says little about this text)" + ("; dense latents are hidden" if result.get(
                           "hide_dense") else ""))
        highlight(rows, "by_activation", "by SAE activation (shade: top activation)")
        highlight(rows, "by_attribution", "by attribution score (orange + raises the loss, blue - supports the "
                                          "prediction)")
    st.dataframe(cc.rows_table(rows), hide_index=True, key="cc_rows")

    st.subheader("A concept")
    ranked = cc.concepts_in(rows, keys[-1])
    pick = st.dataframe(ranked, hide_index=True, on_select="rerun", selection_mode="single-row", key="cc_pick")
    chosen = pick.selection.rows if pick is not None else []
    default_id = int(ranked["concept"].iloc[chosen[0]]) if chosen else (int(ranked["concept"].iloc[0]) if len(ranked) else 0)
    typed = st.number_input("concept id (click a row above, or type one)", min_value=0, value=default_id, step=1,
                            key=f"cc_id_{default_id}")
    if result["kind"] == "cocomix" and not with_labels:
        st.info("Turn on concept labels to see a concept's contexts.")
    else:
        with ui.guard("concept"):
            sae_used, teacher = result["labels_from"]
            if result["kind"] == "cocomix":
                st.caption(f"labels come from its teacher: SAE `{sae_used}` on `{teacher}`.")
            concept_details(int(typed), rows, keys, result["labels_from"])
