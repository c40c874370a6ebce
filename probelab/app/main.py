"""probelab's Streamlit app: ``probelab app`` (or ``streamlit run apps/probelab_app.py`` in a checkout).

Three pages, each a small script in ``views/`` that only calls probelab (``probelab.app_support``):
alignment (per-layer drift, UMAP, neighbours, pairs, score), concepts (per-token SAE activations /
attribution scores / CoCoMix predictions with labels), steering (steered vs plain).

Every page has its own address (``/alignment``, ``/concepts``, ``/steering``). Streamlit serves its
default page at ``/`` only (``/<its url_path>`` answers "Page not found"), so the default here is a
hidden page that switches to the alignment page, and the alignment page is an ordinary one.
"""
import streamlit as st

st.set_page_config(page_title="probelab", layout="wide")  # no page/page_icon icons: Streamlit fetches icon favicons from a CDN

alignment = st.Page("views/alignment.py", title="Alignment", url_path="alignment")
pages = [
    alignment,
    st.Page("views/concepts.py", title="Concepts", url_path="concepts"),
    st.Page("views/steering.py", title="Steering", url_path="steering"),
    st.Page("views/lens.py", title="Lens", url_path="lens"),
    st.Page("views/features.py", title="Features", url_path="features"),
]


def _start() -> None:
    st.switch_page(alignment)  # "/" opens the alignment page under its own address


st.navigation([st.Page(_start, title="probelab", url_path="start", default=True, visibility="hidden"),
               *pages]).run()
