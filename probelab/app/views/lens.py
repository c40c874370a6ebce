"""Lens page: the logit lens as a token x layer heatmap, per stream (Control LLM branches included),
for a checkpoint and its base side by side."""
import streamlit as st

from probelab.app_support import lens as ln
from probelab.app_support import ui

DEFAULT_TEXT = "The capital of France is"

S = ui.settings()
st.title("Logit lens")
st.caption("Each layer's hidden state read as a next-token distribution through the model's final norm and "
           "unembedding. The last layer is the model's own output. For a Control LLM the pretrained, expanded and "
           "merged branches are read at the merged layers: where the expanded branch departs from the pretrained "
           "one is where the fine-tune changed what the model predicts.")

with st.sidebar:
    st.header("Models")
    model_spec = st.text_input("checkpoint (name or folder)", S.model, key="ln_model").strip()
    base_spec = st.text_input("base, side by side (optional)", "", key="ln_base").strip()
    target = st.text_input("target token (blank: the model's own prediction at each token)", "", key="ln_target")
    metric = st.radio("heatmap", list(ln.METRICS), format_func=ln.METRICS.get, key="ln_metric")
    top_k = st.slider("top tokens per layer", 1, 10, 5, key="ln_topk")

text = st.text_area("text", DEFAULT_TEXT, key="ln_text", height=70)


@st.cache_data(show_spinner=False, max_entries=32)
def read(spec: str, text: str, target: str, top_k: int):
    model, tok = ui.model_pair(spec)
    with ui.model_lock():  # not while another session steers this model
        return ln.compute(model, tok, text, target, top_k)


results = {}
for role, spec in (("checkpoint", model_spec), ("base", base_spec)):
    if not spec:
        continue
    with ui.guard(f"{role} {spec}"):
        with st.spinner(f"loading {spec} and reading every layer"):
            results[role] = read(spec, text, target, top_k)

if results:
    streams = list(dict.fromkeys(s for r in results.values() for s in ln.stream_choices(r)))
    stream = st.selectbox("stream", streams, key="ln_stream", format_func=lambda s: f"{s}: {ln.STREAM_HELP.get(s, s)}")
    cols = st.columns(len(results))
    for col, (role, res) in zip(cols, results.items()):
        with col:
            name = model_spec if role == "checkpoint" else base_spec
            st.markdown(f"**{role}** `{name}`")
            st.caption(ln.summary(res))
            shown = stream if stream in res.streams else "resid"
            if shown != stream:
                st.info(f"{name} has no {stream!r} stream (not a Control LLM); showing resid.")
            with ui.guard("heatmap"):
                st.plotly_chart(ln.heatmap(res, shown, metric, title=f"{shown}: {ln.METRICS[metric]}"),
                                key=f"ln_map_{role}")
    first = next(iter(results.values()))
    n = len(first.tokens)
    position = st.selectbox("token for the per-layer table", list(range(n)), index=n - 1, key="ln_pos",
                            format_func=lambda i: f"{i}: {first.tokens[i]!r}")
    for role, res in results.items():
        if position < len(res.tokens):
            st.markdown(f"**{role}**: every stream and layer at token {position}")
            st.dataframe(ln.rows_table(res, position), hide_index=True, key=f"ln_rows_{role}")
