"""Model loading and the model kinds probelab builds (Control LLM, CoCoMix)."""
from .loading import load_folder, load_hub, load_model, register_folder_kind
from .registry import DEFAULT_MODEL, MODELS, ModelSpec, register_model

__all__ = ["load_model", "load_folder", "load_hub", "register_folder_kind", "MODELS", "ModelSpec",
           "register_model", "DEFAULT_MODEL"]
