"""CoCoMix (arXiv 2502.08524): pretraining with continuous concepts predicted from a teacher's SAE.

Modules, one idea each: ``config`` (the ``cocomix`` block), ``predictor`` (LayerNorm -> concept
logits), ``compress`` (TopK -> one continuous concept), ``interleave`` (the doubled sequence, its
mask and positions), ``model`` (the student), ``loss``, ``generation`` (KV-cached decoding),
``steering`` (concept logits in the student, SAE directions in a teacher), ``sizing`` (active
parameters, the width-matched NTP baseline), ``labels`` (teacher concept labels, cached), ``io``.

Importing this package registers the ``cocomix`` folder kind, so ``probelab.load_model(folder)``
loads saved students, and ``model_type: cocomix`` with transformers' ``AutoConfig`` /
``AutoModelForCausalLM``.
"""
from ..loading import register_folder_kind
from .config import CoCoMixConfig
from .io import load_cocomix, save_cocomix
from .model import CoCoMixForCausalLM, CoCoMixLlamaConfig, CoCoMixOutput
from .sizing import cocomix_active_parameters, llama_parameters, matched_ntp_config
from .steering import steer_cocomix, steer_residual
from .tiny import tiny_cocomix


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` know ``model_type: cocomix`` (idempotent)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if CoCoMixLlamaConfig.model_type not in CONFIG_MAPPING:
        AutoConfig.register(CoCoMixLlamaConfig.model_type, CoCoMixLlamaConfig)
        AutoModelForCausalLM.register(CoCoMixLlamaConfig, CoCoMixForCausalLM)


register_auto_classes()
register_folder_kind("cocomix", load_cocomix)

__all__ = ["CoCoMixConfig", "CoCoMixLlamaConfig", "CoCoMixForCausalLM", "CoCoMixOutput", "save_cocomix",
           "load_cocomix", "register_auto_classes", "tiny_cocomix", "steer_cocomix", "steer_residual",
           "matched_ntp_config", "cocomix_active_parameters", "llama_parameters"]
