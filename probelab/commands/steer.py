"""``probelab steer``: generate with and without steering by a concept, side by side.

- a CoCoMix model: the concept's predicted logit is multiplied by ``--scale`` before TopK;
- any other model: needs ``--sae``; ``--scale`` times the SAE decoder direction of the concept is
  added to the residual stream at the SAE's layer (``--scale`` is in units of the latent's activation).
"""
from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ProbelabError


def _greedy(model, tok, prompt: str, max_new_tokens: int, cocomix: bool) -> str:
    import torch

    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        if cocomix:
            out = model.generate(enc["input_ids"], enc["attention_mask"], max_new_tokens=max_new_tokens,
                                 eos_token_id=tok.eos_token_id)
        else:
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def steer_cmd(
    prompt: str = typer.Argument(..., help="text to continue"),
    model: str = typer.Option(..., "--model", "-m", help="model name or folder (a CoCoMix folder, or any LM with --sae)"),
    concept: List[int] = typer.Option(..., "--concept", "-c", help="concept id (an SAE latent); repeat for several"),
    scale: float = typer.Option(5.0, "--scale", "-s", help="CoCoMix: logit factor; with --sae: coefficient of the SAE direction"),
    sae: Optional[str] = typer.Option(None, "--sae", help="SAE (default | folder | release:id) to steer a non-CoCoMix model"),
    max_new_tokens: int = typer.Option(20, "--max-new-tokens", "-n", min=1, max=512),
) -> None:
    """Print the continuation of PROMPT unsteered and steered by one or more concepts."""
    from ..models import load_model
    from ..models.cocomix import CoCoMixForCausalLM, steer_cocomix, steer_residual

    if not prompt.strip():
        raise ProbelabError("the prompt is empty")
    lm, tok = load_model(model)
    concepts = {int(c): scale for c in concept}
    is_cocomix = isinstance(lm, CoCoMixForCausalLM)
    if is_cocomix:
        how = f"concept logit x {scale:g} before TopK"
        steering = steer_cocomix(lm, concepts)  # validates the ids against n_concepts
    else:
        if sae is None:
            raise ProbelabError(f"{model} is not a CoCoMix model; pass --sae to steer it in the residual stream")
        from ..sae import load_sae

        sae_model = load_sae(sae)
        how = f"residual + {scale:g} x SAE direction"
        steering = steer_residual(lm, sae_model, concepts)  # checks width, layer and ids
    with steering:
        steered = _greedy(lm, tok, prompt, max_new_tokens, is_cocomix)
    plain = _greedy(lm, tok, prompt, max_new_tokens, is_cocomix)
    table = Table(title=f"steering {model} by concept {', '.join(map(str, concepts))} ({how})", show_lines=True)
    table.add_column("run")
    table.add_column("continuation")
    table.add_row("unsteered", plain)
    table.add_row("steered", steered)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("steer")(steer_cmd)
