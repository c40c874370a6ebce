"""``probelab expand BASE OUT``: build a Control LLM (or stack / hybrid expansion) from a base model."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from . import options


def expand_cmd(
    base: str = typer.Argument(..., help="base model: a name (probelab models), a local folder or a hub id"),
    out: Path = typer.Argument(..., help="output folder (written atomically)"),
    strategy: str = typer.Option("concat", help="concat | stack | hybrid"),
    interpolation: str = typer.Option("lerp", help="lerp | dlerp | dlerpin | plerp | moe (concat layers)"),
    num_expanded: Optional[int] = typer.Option(
        None, "--num-expanded", "-n", min=1,
        help="number of expanded layers N [default: 8, or every layer of a model with fewer than 8]"),
    divergence: str = typer.Option("mse", help="mse | cosine | none"),
    alpha: str = typer.Option("1.0", help="divergence weight: a number (0 = off) or 'dynamic'"),
    cosine_margin: float = typer.Option(0.0, help="margin of the cosine divergence"),
    preset: str = typer.Option(
        "probelab", help="probelab (this package's defaults) | official (the Control LLM code's defaults: "
                         "Lerp fixed at 0.5, random gates, MoE divergence on routed tokens); see docs/control_llm.md"),
    freeze_interpolator: Optional[bool] = typer.Option(
        None, "--freeze-interpolator/--train-interpolator",
        help="keep the interpolation factor (Lerp weight, gate bias) fixed [default: from --preset]"),
    gate_init: Optional[str] = typer.Option(None, help="zero | random: Dlerp/DlerpIn/MoE gate weights "
                                                       "[default: from --preset]"),
    moe_divergence: Optional[str] = typer.Option(None, help="all | routed: MoE tokens the divergence counts "
                                                            "[default: from --preset]"),
    detach_alpha: Optional[bool] = typer.Option(
        None, "--detach-alpha/--no-detach-alpha",
        help="dynamic alpha as a constant coefficient (or with gradient) [default: from --preset]"),
    allow_network: bool = typer.Option(False, help="allow downloading a hub base model"),
    overwrite: bool = options.overwrite_option(),
    device: str = options.device_option(),
    dtype: str = options.dtype_option(),
) -> None:
    """Expand BASE as in Control LLM (arXiv 2501.10979) and save it as an HF folder in OUT."""
    from ..models import load_model
    from ..models.control import ExpansionConfig, expand_model, save_control
    from ..paths import check_out

    check_out(out, "model", overwrite, option="OUT")  # before the base model is loaded

    cfg = ExpansionConfig(strategy=strategy, interpolation=interpolation, num_expanded=num_expanded or 8,
                          divergence=divergence, alpha=alpha, cosine_margin=cosine_margin,
                          preset=preset, freeze_interpolator=freeze_interpolator, gate_init=gate_init,
                          moe_divergence=moe_divergence, detach_alpha=detach_alpha, base_model=base)
    model, tok = load_model(base, device=device, dtype=dtype, allow_network=allow_network or None)
    if num_expanded is None:  # the paper's 8, capped for small (test) models
        from ..capture import decoder_layers

        cfg.num_expanded = min(8, len(decoder_layers(model)))
    control = expand_model(model, cfg)
    save_control(control, out, tok, overwrite=overwrite)

    n_train = sum(p.numel() for p in control.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in control.parameters())
    table = Table(title=f"{control.expansion.name}: {base} → {out}")
    table.add_column("field")
    table.add_column("value")
    e = control.expansion
    rows = [("strategy", e.strategy), ("expanded base layers", ", ".join(map(str, e.layers))),
            ("merged stream layers", ", ".join(map(str, control.merged_layers)) or "-"),
            ("inserted blocks", ", ".join(map(str, control.stacked_layers)) or "-"),
            ("interpolator", e.interpolation if e.strategy != "stack" else "-"),
            ("divergence", f"{e.divergence} (alpha={e.alpha})" if e.strategy != "stack" else "-"),
            ("preset", f"{e.preset} (freeze_interpolator={e.freeze_interpolator}, gate_init={e.gate_init}, "
                       f"moe_divergence={e.moe_divergence}, detach_alpha={e.detach_alpha})"),
            ("trainable params", f"{n_train:,} of {n_all:,} ({100 * n_train / n_all:.1f}%)")]
    for k, v in rows:
        table.add_row(k, str(v))
    console = Console()
    console.print(table)
    console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("expand")(expand_cmd)
