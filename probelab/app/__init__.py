"""The Streamlit app's scripts: ``main.py`` (navigation) and one page script per file in ``views/``.

They ship inside the package so ``probelab app`` works from any installed copy; the logic they call
lives in :mod:`probelab.app_support`.
"""
