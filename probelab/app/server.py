"""The app's server process: Streamlit's own command line, with the first page's work started early.

    python -m probelab.app.server run probelab/app/main.py --server.address 127.0.0.1 ...

``probelab app`` runs this instead of ``python -m streamlit``: before handing the arguments to
Streamlit's CLI it starts :func:`probelab.app_support.prewarm.start` for the app's start model, so
the heavy imports and the model load overlap the server start and the browser's first request.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from ..app_support import prewarm

    prewarm.start()  # a daemon thread; this thread goes straight on to Streamlit
    from streamlit.web import cli

    sys.argv = ["streamlit", *(sys.argv[1:] if argv is None else argv)]
    return cli.main(prog_name="streamlit")


if __name__ == "__main__":
    sys.exit(main())
