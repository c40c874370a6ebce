"""probelab: build and examine Control LLM and CoCoMix models.

>>> import probelab
>>> model, tok = probelab.load_model("tiny-llama")
>>> caps = probelab.capture(model, tok, ["king is to queen", "man is to woman"])
>>> tuple(caps.stream("resid").shape)
(5, 2, 64)
"""
from .capture import Captures, capture
from .errors import ProbelabError
from .models import load_model
from .probes import load_probes

__version__ = "0.1.0"
__all__ = ["load_model", "capture", "Captures", "load_probes", "ProbelabError", "__version__"]
