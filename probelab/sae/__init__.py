"""Sparse autoencoders on a model's residual stream: train, load, attribute, label.

- :func:`load_sae` / :func:`check_sae_fits`: sae-lens SAEs from disk (or a pretrained release with
  network allowed), checked against the model's width and depth;
- :class:`ConceptLabeler` / :func:`attribute`: CoCoMix attribution scores and top-K_attr labels;
- :func:`concept_labels` / :func:`inspect_text`: latent labels and per-token concept tables;
- :func:`compare_selection`: selection by attribution vs activation, measured by ablation;
- :func:`ensure_default_sae`: the cached SAE for the embedded SmolLM2 (trained on first use).
"""
from .attribution import IGNORE_LABEL, VARIANTS, Attribution, AttributionSpec, ConceptLabeler, attribute, resolve_spec
from .inspect import inspect_text
from .labels import ConceptLabels, concept_labels
from .load import check_sae_fits, hook_name_of, load_sae
from .selection import compare_selection
from .site import SAESiteError, hf_hook_name, resid_index


def ensure_default_sae(progress: bool = True):
    """The default SAE for the embedded SmolLM2, trained and cached on first use."""
    from .train import ensure_default_sae as _ensure

    return _ensure(progress=progress)


default_sae = ensure_default_sae

__all__ = ["ConceptLabeler", "attribute", "Attribution", "AttributionSpec", "VARIANTS", "IGNORE_LABEL",
           "resolve_spec", "load_sae", "check_sae_fits", "hook_name_of", "resid_index", "hf_hook_name",
           "SAESiteError", "ensure_default_sae", "default_sae", "inspect_text", "concept_labels", "ConceptLabels",
           "compare_selection"]
