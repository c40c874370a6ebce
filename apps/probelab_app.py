"""Run probelab's Streamlit app from a source checkout: ``streamlit run apps/probelab_app.py``.

The app itself ships inside the package (``probelab/app/``); ``probelab app`` is the usual way in.
"""
import runpy
from pathlib import Path

import probelab.app

runpy.run_path(str(Path(probelab.app.__file__).with_name("main.py")), run_name="__main__")
