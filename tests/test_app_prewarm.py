"""The app server's prewarm: the start model is loaded in a background thread and handed to the first
page that asks for it (once, same device and dtype); nothing else is ever handed out."""
from __future__ import annotations

import subprocess
import sys

import torch


def test_prewarm_hands_over_the_start_model_once():
    from probelab.app_support import prewarm
    from probelab.models import load_model

    prewarm.start({"PROBELAB_APP_MODEL": "tiny-llama", "PROBELAB_DEVICE": "cpu"}).join(timeout=120)
    assert prewarm.take("smollm2-135m") is None  # another model: not handed out, still kept
    model, tok = prewarm.take(" tiny-llama", "cpu", "auto")
    fresh, _ = load_model("tiny-llama", device="cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(model(ids).logits, fresh(ids).logits)
    assert prewarm.take("tiny-llama") is None  # once


def test_prewarm_refuses_another_dtype_and_survives_a_failed_load():
    from probelab.app_support import prewarm

    prewarm.start({"PROBELAB_APP_MODEL": "tiny-llama", "PROBELAB_DEVICE": "cpu"}).join(timeout=120)
    assert prewarm.take("tiny-llama", "cpu", "bfloat16") is None
    prewarm.start({"PROBELAB_APP_MODEL": "no-such-model"}).join(timeout=120)
    assert prewarm.take("no-such-model") is None  # the page then loads it and shows the error


def test_server_entry_does_not_import_torch_before_streamlit():
    """probelab.app.server starts the thread and hands straight over: its own imports stay light."""
    code = ("import sys, probelab.app.server, probelab.app_support.prewarm; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
