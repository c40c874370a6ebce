"""Work the app's first page needs, started while the server starts instead of when a browser connects.

Streamlit runs a page script only when a browser session opens it, so on a cold start the first page
waited for the heavy imports (torch, transformers: several seconds on a small CPU) and then for the
start model's weights. :func:`start` begins both in a background thread of the server process (see
:mod:`probelab.app.server`); :func:`take` hands the loaded model, once, to the first code that asks
for that model (the alignment page's at-init expansion, ``alignment.build_at_init``, or
``ui.model_pair`` for the other pages), waiting for the thread if it is still loading. A
failure in the thread is never raised here: the page then loads the model itself and reports the
error in its usual way.

>>> take("a model nobody warmed") is None
True
"""
from __future__ import annotations

import importlib
import threading
from concurrent.futures import Future

MODULES = ("torch", "transformers", "probelab.capture", "probelab.analysis", "plotly.graph_objects")
_lock = threading.Lock()
_warm: Future | None = None  # -> (model spec, (model, tokenizer))


def _run(future: Future, env: dict) -> None:
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the page imports them again and reports a real failure
            pass
    try:
        from ..models import load_model
        from ..models.devices import ENV_DEVICE, ENV_DTYPE
        from .settings import AppSettings

        spec = AppSettings.from_env(env).model
        device = env.get(ENV_DEVICE, "").strip() or "auto"
        dtype = env.get(ENV_DTYPE, "").strip() or "auto"
        future.set_result((spec, load_model(spec, device=device, dtype=dtype)))
    except BaseException as e:  # noqa: BLE001 - take() then returns None and the page loads the model itself
        future.set_exception(e)


def start(env: dict | None = None) -> threading.Thread:
    """In a daemon thread: import the heavy modules, then load the app's start model (``PROBELAB_APP_MODEL``,
    else the embedded default) on ``PROBELAB_DEVICE``/``PROBELAB_DTYPE``. Nothing here imports torch
    in the calling thread."""
    import os

    global _warm
    future: Future = Future()
    with _lock:
        _warm = future
    thread = threading.Thread(target=_run, args=(future, dict(os.environ if env is None else env)),
                              name="probelab-prewarm", daemon=True)
    thread.start()
    return thread


def take(spec: str, device: str = "auto", dtype: str = "auto"):
    """The warmed ``(model, tokenizer)`` if it is ``spec`` on ``device``/``dtype`` (handed out once), else
    None: nothing warmed, another model, or its load failed. Waits while the thread is still loading."""
    global _warm
    with _lock:
        future = _warm
    if future is None:
        return None
    try:
        warmed_spec, pair = future.result()
    except BaseException:  # noqa: BLE001 - the caller loads it itself and shows that error
        with _lock:
            _warm = None if _warm is future else _warm
        return None
    if warmed_spec != spec.strip():
        return None
    with _lock:
        if _warm is not future:  # another page took it first
            return None
        _warm = None
    from ..models.devices import input_device, model_dtype, resolve_device, resolve_dtype

    model, tok = pair
    try:
        same = (input_device(model).type == resolve_device(device).type
                and model_dtype(model) == resolve_dtype(dtype, device))
    except Exception:  # noqa: BLE001
        same = False
    return (model, tok) if same else None
