"""Selecting concepts by attribution vs by activation (CoCoMix Fig. 6a), measured by ablation.

For every token, each *rule* picks k latents; their contribution to the residual stream
(``decode(z on the picked latents) - decode(0)``) is removed at every position at once, the
teacher runs on from the SAE site, and the mean next-token loss is compared with the clean run.
Rules:

- ``activation``: largest SAE activations (the paper's baseline);
- ``attribution``: largest signed score (the official CoCoMix labels);
- ``-attribution``: most negative signed score;
- ``|attribution|``: largest absolute score;
- ``random``: k random active latents.

To first order, removing latent i changes the loss by ``-score_i``: the signed top-k (what
CoCoMix trains on) are the latents whose removal *lowers* the loss most, the most negative ones
those whose removal raises it most. The numbers make that visible. ``splice`` is the loss with
the residual replaced by the full SAE reconstruction (the usual "CE loss recovered" check).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..capture import position_ids_from_mask
from .attribution import AttributionSpec, attribute, next_token_losses
from .evaluate import sink_mask
from .load import check_sae_fits
from .teacher import residual_leaf


def _random_active(att, gen):
    noise = torch.rand(att.post.shape, generator=gen)
    return torch.where(att.post > 0, noise, torch.full_like(noise, -1.0))


RULES = {
    "activation": lambda att, gen: att.post,
    "attribution": lambda att, gen: att.scores,
    "-attribution": lambda att, gen: -att.scores,
    "|attribution|": lambda att, gen: att.scores.abs(),
    "random": _random_active,
}


@dataclass
class SelectionResult:
    k: int
    n_tokens: int
    clean_loss: float
    splice_loss: float
    ablated_loss: dict[str, float]

    def delta(self) -> dict[str, float]:
        return {r: v - self.clean_loss for r, v in self.ablated_loss.items()}

    def as_dict(self) -> dict:
        return {"k": self.k, "n_tokens": self.n_tokens, "clean_loss": self.clean_loss,
                "splice_loss": self.splice_loss, "ablated_loss": self.ablated_loss, "delta_loss": self.delta()}


@torch.no_grad()
def _loss_with(model, ids, mask, site, h_new) -> tuple[float, int]:
    with residual_leaf(model, site, replace=h_new):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                       use_cache=False).logits
    losses, valid = next_token_losses(logits, ids, mask)
    return losses.sum().item(), int(valid.sum())


def compare_selection(model, tok, sae, texts: list[str], k: int = 4, batch_size: int = 8, max_length: int = 128,
                      seed: int = 0, progress: bool = True, rules: list[str] | None = None,
                      skip_first: bool = True) -> SelectionResult:
    """Mean next-token loss after ablating each rule's top-k latents at every token of ``texts``.

    ``skip_first``: leave attention-sink tokens untouched (ablation and splice; see
    :func:`probelab.sae.evaluate.sink_mask`): their residual norm is ~200x the others on SmolLM2,
    the SAE is not trained on them, and editing them would perturb every later token through
    attention and swamp the comparison.
    """
    site = check_sae_fits(sae, model)
    rules = rules or list(RULES)
    gen = torch.Generator().manual_seed(seed)
    spec = AttributionSpec("post", "sequence", "signed")
    sums = {r: 0.0 for r in rules}
    clean = splice = 0.0
    count = 0
    for i in tqdm(range(0, len(texts), batch_size), desc="selection", disable=not progress, unit="batch"):
        enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        att = attribute(model, sae, ids, mask, spec, site)
        h = att.residual
        edit = mask.bool().clone()
        if skip_first:
            for b in range(ids.shape[0]):
                real = edit[b].nonzero().flatten()
                edit[b, real] = sink_mask(h[b, real])
        edit = edit.unsqueeze(-1).to(h.dtype)
        loss, n = _loss_with(model, ids, mask, site, h)
        clean += loss
        count += n
        with torch.no_grad():
            base = sae.decode(torch.zeros_like(att.post))
            spliced = h + edit * (sae.decode(att.post).to(h.dtype) - h)
            splice += _loss_with(model, ids, mask, site, spliced)[0]
            for rule in rules:
                picked = torch.topk(RULES[rule](att, gen), k, dim=-1).indices
                keep = torch.zeros_like(att.post).scatter(-1, picked, 1.0)
                removed = sae.decode(att.post * keep) - base
                sums[rule] += _loss_with(model, ids, mask, site, h - edit * removed.to(h.dtype))[0]
    return SelectionResult(k, count, clean / count, splice / count, {r: s / count for r, s in sums.items()})
