"""CoCoMix's objective (paper Eq. 3): ``L = CE_ntp + lambda * (1/K_attr) sum_k CE(z_t, i_k)``.

The next-token term is the usual shifted cross-entropy on the logits read from the concept slots.
The concept term is a cross-entropy of the predicted concept logits against each of the K_attr
labels the teacher's attribution chose for that token, averaged over labels and tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def ntp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: position t predicts ``labels[:, t + 1]``; ``-100`` is ignored."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)


def concept_loss(z: torch.Tensor, concept_labels: torch.Tensor) -> torch.Tensor:
    """Mean over tokens and K_attr labels of ``-log softmax(z_t)[i]``; negative labels are ignored.

    ``z [B, T, C]`` concept logits, ``concept_labels [B, T, K_attr]`` concept ids.
    """
    logp = z.float().log_softmax(-1)
    valid = concept_labels >= 0
    picked = logp.gather(-1, concept_labels.clamp(min=0))
    n = valid.sum()
    if n == 0:
        return z.sum() * 0.0
    return -(picked * valid).sum() / n


def cocomix_loss(logits, labels, z, concept_labels, lam: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, ntp, concept)``; with ``concept_labels=None`` (or lam 0) the total is the NTP loss."""
    ntp = ntp_loss(logits, labels)
    if concept_labels is None:
        return ntp, ntp, torch.zeros((), device=ntp.device)
    concept = concept_loss(z, concept_labels)
    return ntp + lam * concept, ntp, concept
