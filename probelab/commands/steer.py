"""``probelab steer``: generate with and without steering by a concept, side by side, or sweep the scale.

- a CoCoMix model: the concept's predicted logit is multiplied by ``--scale`` before TopK;
- any other model: needs ``--sae``; ``--scale`` times the SAE decoder direction of the concept is
  added to the residual stream at the SAE's layer (``--scale`` is in units of the latent's activation).

``--sweep START:STOP:N`` runs N scales and prints a dose-response table (``--json``: one row per
scale; ``--out DIR``: an offline HTML page and the rows as JSON). Every output names the concept's label.
"""
from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ProbelabError
from . import options


def _console() -> Console:
    # piped output: wide enough that tables are not cut to 80 columns
    return Console() if sys.stdout.isatty() else Console(width=160)


def _load(model: str, device: str, dtype: str, allow_network: bool):
    from ..models import load_model

    return load_model(model, device=device, dtype=dtype, allow_network=allow_network or None)


def _labels_for(lm, tok, sae_model, sae_src: Optional[str], concepts: list[int], allow_network: bool,
                device: str, dtype: str) -> dict[int, str]:
    """Each concept's label; for a CoCoMix model, from its teacher's SAE (loaded here)."""
    from ..models.cocomix import CoCoMixForCausalLM
    from ..steering_sweep import concept_label, resolve_sae

    if not isinstance(lm, CoCoMixForCausalLM):
        path = sae_src if sae_src not in (None, "default", "tiny") else None
        return {c: concept_label(lm, tok, c, sae=sae_model, sae_path=path) for c in concepts}
    from ..app_support.concepts import teacher_of

    t_spec, t_sae = teacher_of(lm, "smollm2-135m", sae_src or "default")
    try:
        teacher = _load(t_spec, device, dtype, allow_network)
        if t_sae == "default":  # a label never starts the default SAE's training
            from ..sae.load import check_default_fits, load_sae

            check_default_fits(teacher[0])
            tsae = load_sae("default", train_if_missing=False)
        else:
            tsae = resolve_sae(t_sae, teacher[0], allow_network=allow_network or None)
        n, d_sae = int(lm.cocomix.n_concepts), int(tsae.cfg.d_sae)
        if d_sae != n:
            raise ProbelabError(f"its {d_sae} latents are not this model's {n} concepts")
    except ProbelabError as e:
        return {c: f"(no label: teacher {t_spec} / SAE {t_sae}: {e})" for c in concepts}
    return {c: concept_label(lm, tok, c, sae=tsae, teacher=teacher) for c in concepts}


def steer_cmd(
    prompt: str = typer.Argument(..., help="text to continue"),
    model: str = typer.Option(..., "--model", "-m", help="model name or folder (a CoCoMix folder, or any LM with --sae)"),
    concept: List[int] = typer.Option(..., "--concept", "-c", help="concept id (an SAE latent); repeat for several"),
    scale: float = typer.Option(5.0, "--scale", "-s", help="CoCoMix: logit factor; with --sae: coefficient of the SAE direction"),
    sae: Optional[str] = typer.Option(None, "--sae", help="SAE (default | tiny | folder | release:id) to steer a "
                                      "non-CoCoMix model; for a CoCoMix model, its teacher's SAE (for the labels)"),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="START:STOP:N: a dose-response sweep over N scales "
                                        "(both ends included), e.g. 0:80:5"),
    target: List[str] = typer.Option([], "--target", "-t", help="sweep: a token whose next-token probability to "
                                     "track (repeat; a word usually needs its leading space: ' Paris')"),
    max_new_tokens: int = typer.Option(20, "--max-new-tokens", "-n", min=1, max=512),
    as_json: bool = typer.Option(False, "--json", help="print JSON (a sweep: one object per scale)"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="sweep: write DIR/sweep.html (offline) and sweep.json"),
    overwrite: bool = options.overwrite_option(),
    device: str = options.device_option(),
    dtype: str = options.dtype_option(),
    allow_network: bool = options.allow_network_option(),
) -> None:
    """Print the continuation of PROMPT unsteered and steered by one or more concepts (or a --sweep of scales)."""
    from ..models.cocomix import CoCoMixForCausalLM, steer_cocomix, steer_residual
    from ..steering_sweep import check_scales, parse_sweep, resolve_sae

    if not prompt.strip():
        raise ProbelabError("the prompt is empty")
    scales = parse_sweep(sweep) if sweep is not None else None
    check_scales([scale])
    if scales is None and (target or out):
        raise ProbelabError("--target and --out belong to a sweep: add --sweep START:STOP:N")
    if scales is not None and len(set(concept)) != 1:
        raise ProbelabError("a sweep steers by one concept: give --concept once")
    if any(not t for t in target):
        raise ProbelabError("a target token is empty")
    if out:  # before any model loads or labels build
        from ..paths import check_out

        check_out(out, "sweep", overwrite)
    lm, tok = _load(model, device, dtype, allow_network)
    is_cocomix = isinstance(lm, CoCoMixForCausalLM)
    sae_model = None
    if not is_cocomix:
        if sae is None:
            raise ProbelabError(f"{model} is not a CoCoMix model; pass --sae to steer it in the residual stream")
        sae_model = resolve_sae(sae, lm, allow_network=allow_network or None).to(next(lm.parameters()).device)
    ids = list(dict.fromkeys(int(c) for c in concept))
    if is_cocomix:
        from ..models.cocomix.steering import check_concepts

        check_concepts({c: 1.0 for c in ids}, lm.cocomix.n_concepts)
    else:
        from ..models.cocomix.steering import sae_direction

        for c in ids:
            sae_direction(sae_model, c)
    labels = _labels_for(lm, tok, sae_model, sae, ids, allow_network, device, dtype)
    named = ", ".join(f"{c} ({labels[c]})" for c in ids)

    if scales is not None:
        from ..steering_sweep import COLUMN_NOTES, steering_sweep, sweep_table_rows, write_sweep

        c = ids[0]
        result = steering_sweep(lm, tok, prompt, c, scales, sae=sae_model, max_new_tokens=max_new_tokens,
                                targets=target, label=labels[c], progress=not as_json)
        if out:
            write_sweep(result, out, model_name=model, overwrite=overwrite)
        if as_json:
            print(json.dumps(result.json_rows()))
            return
        cols, rows = sweep_table_rows(result)
        table = Table(title=f"steering sweep of {model} by concept {named}: {result.how}",
                      caption=f"unsteered: {result.unsteered!r}")
        for col in cols:
            table.add_column(col, justify="left" if col == "continuation" else "right",
                             overflow="fold")
        for r in rows:
            table.add_row(*r)
        console = _console()
        console.print(table)
        for k, v in COLUMN_NOTES.items():
            if k in cols or (k == "p(target)" and target):
                console.print(f"[dim]{k}: {v}[/dim]")
        if out:
            console.print(f"wrote {out}/sweep.html and sweep.json")
        return

    concepts = {c: scale for c in ids}
    if is_cocomix:
        how = f"concept logit x {scale:g} before TopK"
        steering = steer_cocomix(lm, concepts)
    else:
        how = f"residual + {scale:g} x SAE direction"
        steering = steer_residual(lm, sae_model, concepts)
    from ..app_support.steering import greedy

    with steering:
        steered = greedy(lm, tok, prompt, max_new_tokens)
    plain = greedy(lm, tok, prompt, max_new_tokens)
    if as_json:
        print(json.dumps({"concepts": [{"id": c, "label": labels[c]} for c in ids], "scale": scale, "how": how,
                          "unsteered": plain, "steered": steered}))
        return
    table = Table(title=f"steering {model} by concept {named} ({how})", show_lines=True)
    table.add_column("run")
    table.add_column("continuation", overflow="fold")
    table.add_row("unsteered", plain)
    table.add_row("steered", steered)
    _console().print(table)


def register(app: typer.Typer) -> None:
    app.command("steer")(steer_cmd)
