"""Thin helpers behind the Streamlit app (``apps/``, launched by ``probelab app``).

The app holds no analysis logic: every number it shows comes from :mod:`probelab.analysis`,
:mod:`probelab.sae`, :mod:`probelab.models.control` and :mod:`probelab.models.cocomix`. What
lives here is the glue those packages do not need themselves, each in its own small module:

- :mod:`.settings`: which model / SAE / folders the app starts on (env vars, query params);
- :mod:`.sources`: finding checkpoints and saved alignments on disk, checking a folder;
- :mod:`.alignment`: the panel-a target (an at-init expansion), pasted probes, a result store,
  figure and table shapes the pages show;
- :mod:`.concepts`: SAE choice, per-token concept rows and their HTML highlighting;
- :mod:`.steering`: steered vs unsteered generation of one prompt;
- :mod:`.launch`: the ``streamlit run`` command line;
- :mod:`.ui`: Streamlit-side caching and error display (imported only by the app).

Everything except :mod:`.ui` is plain Python and is tested without Streamlit.
"""
