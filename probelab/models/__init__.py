"""Model loading and the model kinds probelab builds (Control LLM, CoCoMix).

Importing this package registers both kinds with transformers' Auto classes (``model_type``
``control_llm`` and ``cocomix``), so ``AutoConfig`` / ``AutoModelForCausalLM.from_pretrained(folder)``
load folders probelab saved. ``import probelab`` imports this package (except while the probelab
command line starts; see ``probelab/__init__.py``).
"""
from .loading import load_folder, load_hub, load_model, register_folder_kind
from .registry import DEFAULT_MODEL, MODELS, ModelSpec, register_model


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` know probelab's model types (idempotent).

    Each kind's package registers its classes (and its ``load_model`` folder kind) when imported.
    """
    from . import cocomix, control  # noqa: F401


register_auto_classes()

__all__ = ["load_model", "load_folder", "load_hub", "register_folder_kind", "register_auto_classes", "MODELS",
           "ModelSpec", "register_model", "DEFAULT_MODEL"]
