"""Streamlit-side helpers shared by the app's pages: cached models and results, and error display.

Models, SAEs and concept labels are cached with ``st.cache_resource`` (one copy per server process);
alignment results with ``st.cache_data`` (on top of the disk store in :mod:`.alignment`). Any
exception inside :func:`guard` becomes an ``st.error`` line; the page keeps running.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import streamlit as st

from ..errors import ProbelabError
from . import alignment as al
from . import concepts as cc
from .settings import AppSettings


def settings() -> AppSettings:
    """Settings from the environment, with ``?model=`` / ``?sae=`` query parameters on top."""
    try:
        query = {k: st.query_params.get(k) for k in ("model", "sae") if st.query_params.get(k)}
    except Exception:  # no query params outside a browser session
        query = {}
    return AppSettings.from_env(query=query)


def model_and_sae(defaults: AppSettings, prefix: str, model_label: str, sae_label: str) -> tuple[str, str]:
    """The sidebar's "Model and SAE" header and its two text boxes (keys ``<prefix>_model``, ``<prefix>_sae``,
    filled from ``defaults``); returns ``(model_spec, sae_source)``, stripped. Call it inside ``st.sidebar``."""
    st.header("Model and SAE")
    model_spec = st.text_input(model_label, defaults.model, key=f"{prefix}_model").strip()
    sae_src = st.text_input(sae_label, defaults.sae, key=f"{prefix}_sae").strip()
    return model_spec, sae_src


def message(e: BaseException) -> str:
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(e, ProbelabError):
        return first or type(e).__name__
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


@contextlib.contextmanager
def guard(what: str = "") -> Iterator[None]:
    """Show an exception as one ``st.error`` line (never a traceback page); the rest of the page still runs.

    Streamlit's own control flow (``st.stop``, reruns) derives from ``BaseException`` and passes through.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - this is the app's error boundary
        st.error((f"{what}: " if what else "") + message(e))


# ---- cached resources -------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=4)
def model_pair(spec: str):
    """``(model, tokenizer)`` of a model name or folder; one copy per server process."""
    from ..models import load_model
    from ..models.devices import env_device, env_dtype
    from .prewarm import take

    warmed = take(spec, env_device(), env_dtype())  # loaded while the server started (probelab.app.server)
    return warmed or load_model(spec.strip(), device=env_device(), dtype=env_dtype())  # probelab app --device/--dtype


@st.cache_resource(show_spinner=False, max_entries=2)
def at_init_pair(target: al.AtInit):
    """A freshly expanded copy of the base model (``expand_model`` changes the model it is given)."""
    return al.build_at_init(target)


@st.cache_resource(show_spinner=False)
def model_lock():
    """One lock for the shared models: steering adds hooks / concept scales to a cached model for the
    length of a generation, so runs from different browser sessions must not overlap."""
    import threading

    return threading.Lock()


@st.cache_resource(show_spinner=False, max_entries=4)
def sae_for(source: str, model_spec: str):
    return cc.get_sae(source, model_pair(model_spec)[0])


@st.cache_resource(show_spinner=False, max_entries=4)
def labels_for(source: str, model_spec: str):
    model, tok = model_pair(model_spec)
    return cc.get_labels(model, tok, sae_for(source, model_spec), source)


MEMO_SIZE = 16  # alignment results kept per browser session


# ---- cached results ---------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def stored_alignment(folder: str, mtime: float):
    """A result read from disk (the app's store, or a folder written by ``probelab align``)."""
    return al.load_alignment(folder)


def alignment(target, probe_set, options, store: bool = True):
    """The alignment of ``target``: from this session, from the disk store (``st.cache_data``), or computed
    with a progress bar (then stored, unless ``store`` is off). The computation itself is not inside a
    cached function, so the progress bar is a plain element and is never replayed."""
    from pathlib import Path

    memo = st.session_state.setdefault("_probelab_alignments", {})
    key = (target, repr(al.probe_key(probe_set)), repr(options))
    if key in memo:
        return memo[key]
    folder = al.store_folder(target, probe_set, options)
    if folder is not None and (Path(folder) / "metrics.json").is_file():
        result = stored_alignment(str(folder), (Path(folder) / "metrics.json").stat().st_mtime)
    else:
        bar, report = progress_reporter()
        try:
            result = al.align(target, probe_set, options, build=at_init_pair, progress=report, store=store)
        finally:
            bar.empty()
    memo[key] = result
    while len(memo) > MEMO_SIZE:  # oldest first out
        memo.pop(next(iter(memo)))
    return result


def stored(target, probe_set, options) -> bool:
    """Whether the disk store holds this alignment (so :func:`alignment` reads it instead of computing)."""
    from pathlib import Path

    memo = st.session_state.get("_probelab_alignments", {})
    if (target, repr(al.probe_key(probe_set)), repr(options)) in memo:
        return True
    folder = al.store_folder(target, probe_set, options)
    return folder is not None and (Path(folder) / "metrics.json").is_file()


def with_umap(target, probe_set, options, fast):
    """``fast`` (the alignment without its UMAP map) completed with the map, stored and kept for this
    session under ``options`` (so the next rerun finds it whole)."""
    memo = st.session_state.setdefault("_probelab_alignments", {})
    key = (target, repr(al.probe_key(probe_set)), repr(options))
    if key not in memo:
        memo[key] = al.store_result(al.with_umap(fast, probe_set, options), target, probe_set, options)
    return memo[key]


def progress_reporter():
    """A progress bar and a callback ``(fraction, message)`` that moves it."""
    bar = st.progress(0.0, text="starting")

    def report(fraction: float, text: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=text)

    return bar, report
