"""probelab's Streamlit app: ``probelab app`` (or ``streamlit run apps/probelab_app.py``).

Three pages, each a small script in ``views/`` that only calls probelab (``probelab.app_support``):
alignment (the default: per-layer drift, UMAP, neighbours, pairs, score), concepts (per-token SAE
activations / attribution scores / CoCoMix predictions with labels), steering (steered vs plain).
"""
import streamlit as st

st.set_page_config(page_title="probelab", page_icon=":material/biotech:", layout="wide")

pages = [
    st.Page("views/alignment.py", title="Alignment", icon=":material/stacked_line_chart:", url_path="alignment",
            default=True),
    st.Page("views/concepts.py", title="Concepts", icon=":material/label:", url_path="concepts"),
    st.Page("views/steering.py", title="Steering", icon=":material/alt_route:", url_path="steering"),
]
st.navigation(pages).run()
