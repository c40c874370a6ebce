"""``probelab concepts``: per-token SAE concepts of a text, by activation and by attribution."""
from __future__ import annotations

import json
import warnings

import typer
from rich.console import Console
from rich.table import Table

from . import options


def concepts_cmd(
    text: str = typer.Argument(..., help="the text to inspect"),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="model name or local folder"),
    sae: str = typer.Option("default", "--sae", "-s",
                            help="'default', an sae-lens SAE folder, or '<release>:<sae_id>' (with --allow-network)"),
    top: int = typer.Option(3, min=1, help="concepts per token in each ranking"),
    variant: str = typer.Option("official", help="attribution variant: official | paper"),
    activation: str = typer.Option(None, help="override: post | pre"),
    loss: str = typer.Option(None, help="override: sequence | next_token"),
    sign: str = typer.Option(None, help="override: signed | absolute"),
    order: str = typer.Option("signed", help="attribution ranking: signed (most positive = raises the loss most; "
                                             "what CoCoMix trains on) | absolute (largest |score|) | supporting "
                                             "(most negative = helps the prediction most)"),
    density: bool = typer.Option(True, "--density/--no-density",
                                 help="show each concept's firing density on held-out text (computed once per "
                                      "SAE and model, cached)"),
    hide_dense: bool = typer.Option(False, "--hide-dense", help="leave out dense latents (firing on >10%% of tokens)"),
    labels: bool = typer.Option(True, "--labels/--no-labels", help="label concepts (computed once per SAE, cached)"),
    max_tokens: int = typer.Option(256, min=1, help="longer texts are truncated with a warning"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    allow_network: bool = typer.Option(False, help="allow downloading a hub model or pretrained SAE"),
    device: str = options.device_option(),
    dtype: str = options.dtype_option(),
) -> None:
    """Top SAE concepts at every token: by activation and by attribution score, with labels."""
    from ..models import load_model
    from ..sae import check_sae_fits, load_sae
    from ..errors import ProbelabError
    from ..sae.inspect import ORDERS, inspect_text
    from ..sae.labels import density_of, display_labels, quick_note

    if order not in ORDERS:
        raise ProbelabError(f"unknown --order {order!r}; choose one of {', '.join(ORDERS)}")
    if hide_dense and not density:
        raise ProbelabError("--hide-dense needs the firing density (drop --no-density)")

    m, tok = load_model(model, device=device, dtype=dtype, allow_network=allow_network or None)
    if sae == "default":  # before the default SAE is loaded (or trained)
        from ..sae.load import check_default_fits

        check_default_fits(m)
    from ..models.devices import input_device

    s = load_sae(sae, allow_network=allow_network or None, device=str(input_device(m)))
    check_sae_fits(s, m)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # quick labels (40 intros) until `probelab sae labels` has built the full ones
        lab = display_labels(m, tok, s, sae_path=sae if sae not in ("default",) else None,
                             progress=True) if labels else None
        dens = None
        if density and lab is not None:
            dens = density_of(lab)  # measured by the label build on the same tokens
        elif density:
            from ..sae.density import latent_density

            dens = latent_density(m, tok, s, progress=True)
        result = inspect_text(m, tok, s, text, top=top, variant=variant, labels=lab, max_tokens=max_tokens,
                              activation=activation, loss=loss, sign=sign, order=order, density=dens,
                              hide_dense=hide_dense)
    for w in caught:
        if "truncated" in str(w.message):
            typer.echo(f"warning: {w.message}", err=True)
    note = quick_note(lab, sae)
    if note:
        typer.echo(f"note: {note}", err=True)
    if as_json:
        print(json.dumps(result))
        return
    def describe(c):
        out = f"{c['id']}" + (f" {c['label']}" if "label" in c else "") + f" ({c['value']:.3g}"
        if "density" in c:
            out += f", fires {100 * c['density']:.1f}%" + (" DENSE" if c["dense"] else "")
        return out + ")"

    fmt = lambda items: "  ".join(describe(c) for c in items) or "–"  # none: the last token has no next token
    v = result["variant"]
    heading = {"signed": "most positive", "absolute": "largest |score|", "supporting": "most negative"}[order]
    t = Table(title=f"{model} + SAE {sae} (resid {result['site']}); attribution: {v['activation']}-activation x "
                    f"grad of {v['loss']} loss, {v['sign']}, ranked {order}",
              caption=result["score_meaning"] + (f"; DENSE = fires on >{100 * result['dense_threshold']:.0f}% of "
                                                 f"held-out tokens" if result.get("dense_threshold") else "")
              + ("; dense latents hidden" if hide_dense else ""))
    for col in ("#", "token", "loss", "top by activation", f"top by attribution ({heading})"):
        t.add_column(col, overflow="fold")
    for row in result["tokens"]:
        t.add_row(str(row["position"]), repr(row["token"]) + (" (sink)" if row["sink"] else ""), "" if row["loss"] is None else f"{row['loss']:.2f}",
                  fmt(row["by_activation"]), fmt(row["by_attribution"]))
    Console().print(t)


def register(app: typer.Typer) -> None:
    app.command("concepts")(concepts_cmd)
