"""probelab's Streamlit app: ``probelab app`` (or ``streamlit run apps/probelab_app.py`` in a checkout).

Three pages, each a small script in ``views/`` that only calls probelab (``probelab.app_support``):
alignment (the default: per-layer drift, UMAP, neighbours, pairs, score), concepts (per-token SAE
activations / attribution scores / CoCoMix predictions with labels), steering (steered vs plain).
"""
import streamlit as st

st.set_page_config(page_title="probelab", layout="wide")  # no page/page_icon icons: Streamlit fetches icon favicons from a CDN

pages = [
    st.Page("views/alignment.py", title="Alignment", url_path="alignment",
            default=True),
    st.Page("views/concepts.py", title="Concepts", url_path="concepts"),
    st.Page("views/steering.py", title="Steering", url_path="steering"),
    st.Page("views/lens.py", title="Lens", url_path="lens"),
]
st.navigation(pages).run()
