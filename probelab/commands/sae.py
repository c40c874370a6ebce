"""``probelab sae``: train, inspect, evaluate and label SAEs; compare concept selection rules."""
from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from . import options

sae_app = typer.Typer(help="Sparse autoencoders: train, info, eval, labels, select.", no_args_is_help=True)

SAE_HELP = "'default' (the cached SAE for smollm2-135m), an sae-lens SAE folder, or '<release>:<sae_id>'"


def _load(sae: str, model: str | None, allow_network: bool, train_if_missing: bool = True, device: str = "auto",
          dtype: str = "auto"):
    from ..models import load_model
    from ..models.devices import input_device
    from ..sae import check_sae_fits, load_sae

    if model is None:
        return load_sae(sae, allow_network=allow_network or None, train_if_missing=train_if_missing), None, None, None
    m, tok = load_model(model, device=device, dtype=dtype, allow_network=allow_network or None)
    if sae == "default":  # before the default SAE is loaded (or trained)
        from ..sae.load import check_default_fits

        check_default_fits(m)
    s = load_sae(sae, allow_network=allow_network or None, train_if_missing=train_if_missing,
                 device=str(input_device(m)))
    return s, m, tok, check_sae_fits(s, m)


def _quality_table(title: str, q: dict) -> Table:
    t = Table(title=title)
    for col in ("explained variance", "normalised MSE", "L0", "dead latents", "tokens", "texts"):
        t.add_column(col)
    t.add_row(f"{q['explained_variance']:.3f}", f"{q['nmse']:.4f}", f"{q['l0']:.1f}", f"{100 * q['dead_fraction']:.1f}%",
              str(q["n_tokens"]), str(q["n_texts"]))
    return t


@sae_app.command("train")
def train_cmd(
    out: Path = typer.Option(None, "--out", "-o", help="output folder (default: the cached default SAE)"),
    model: str = typer.Option("smollm2-135m", "--model", "-m"),
    layer: int = typer.Option(13, min=1, help="residual index (probelab.capture numbering; 13 = output of block 12)"),
    d_sae: int = typer.Option(None, min=1, help="number of latents"),
    k: int = typer.Option(None, min=1, help="active latents per token (TopK; at most --d-sae)"),
    tokens: int = typer.Option(None, min=1, help="training tokens (SAE steps x batch; epochs over the cached activations)"),
    cache_tokens: int = typer.Option(None, min=1, help="LM tokens whose activations are computed once and cached"),
    lr: float = typer.Option(None, min=0.0, help="learning rate (> 0, finite)"),
    batch_tokens: int = typer.Option(None, min=1, help="tokens per optimiser step"),
    force: bool = typer.Option(False, help="retrain even if the output folder holds an SAE"),
    overwrite: bool = options.overwrite_option(),
    device: str = options.device_option(),
    dtype: str = typer.Option("float32", "--dtype", envvar="PROBELAB_DTYPE",
                              help="LM weights dtype (the LM forward runs under bf16 autocast; the SAE trains in "
                                   "float32): float32, bfloat16, float16 or auto"),
) -> None:
    """Train a TopK SAE with sae-lens on offline Wikipedia intros; report held-out quality and time."""
    from ..errors import ProbelabError
    from ..sae.train import SAETrainConfig, default_sae_path, read_meta, train_sae

    from ..paths import check_out

    target = out or default_sae_path()
    if (target / "cfg.json").is_file() and not force:
        raise ProbelabError(f"{target} already holds an SAE; pass --force to retrain")
    check_out(target, "sae", overwrite)  # before the model is loaded
    overrides = {k_: v for k_, v in dict(d_sae=d_sae, k=k, training_tokens=tokens, cache_tokens=cache_tokens, lr=lr,
                                          batch_tokens=batch_tokens).items() if v is not None}
    cfg = SAETrainConfig(model=model, layer=layer, device=device, dtype=dtype, **overrides)
    if cfg.k > cfg.d_sae:
        raise typer.BadParameter(f"{cfg.k} active latents need at least as many latents (--d-sae is {cfg.d_sae})",
                                 param_hint="'--k'")
    if not math.isfinite(cfg.lr) or cfg.lr <= 0:
        raise typer.BadParameter(f"the learning rate must be finite and > 0, not {cfg.lr}", param_hint="'--lr'")
    from ..sae.train import TRAIN_TIME

    typer.echo(f"probelab: training an SAE into {target} (the defaults take {TRAIN_TIME}); progress bars follow",
               err=True)
    sae_ = train_sae(cfg, target, overwrite=overwrite)
    meta = read_meta(target)
    Console().print(_quality_table(f"{target} (held-out intros, first token skipped)", meta["heldout_quality"]))
    Console().print(f"trained in {meta['train_seconds']:.0f} s; hook {meta['hook_name']} = resid index {meta['resid_index']}")
    if out is None:  # the default SAE: its concept labels are built now, once, so `probelab concepts` starts fast
        from ..models import load_model
        from ..sae.labels import concept_labels

        m, tok = load_model(model, device=device)
        concept_labels(m, tok, sae_, progress=True)


@sae_app.command("info")
def info_cmd(sae: str = typer.Argument("default", help=SAE_HELP),
             allow_network: bool = typer.Option(False, help="allow downloading a pretrained SAE")) -> None:
    """Architecture, width, site and (for probelab-trained SAEs) held-out quality of an SAE."""
    from ..sae import hook_name_of, resid_index
    from ..sae.train import default_sae_path, read_meta

    s, *_ = _load(sae, None, allow_network, train_if_missing=False)
    cfg = s.cfg
    t = Table(title=f"SAE {sae}")
    t.add_column("field")
    t.add_column("value")
    hook = hook_name_of(s)
    for name, value in [("architecture", cfg.architecture()), ("d_in", cfg.d_in), ("d_sae", cfg.d_sae),
                        ("k", getattr(cfg, "k", "-")), ("hook", hook), ("resid index", resid_index(hook)),
                        ("normalize_activations", cfg.normalize_activations), ("dtype", cfg.dtype)]:
        t.add_row(name, str(value))
    console = Console()
    console.print(t)
    folder = default_sae_path() if sae == "default" else Path(sae)
    meta = read_meta(folder) if folder.is_dir() else {}
    if meta:
        console.print(_quality_table("held-out quality (from training)", meta["heldout_quality"]))
        console.print(f"trained in {meta['train_seconds']:.0f} s on {meta['model']}")


@sae_app.command("eval")
def eval_cmd(sae: str = typer.Argument("default", help=SAE_HELP),
             model: str = typer.Option("smollm2-135m", "--model", "-m"),
             texts: int = typer.Option(200, min=1, help="held-out Wikipedia intros to measure on"),
             as_json: bool = typer.Option(False, "--json"),
             allow_network: bool = typer.Option(False),
             device: str = options.device_option(), dtype: str = options.dtype_option()) -> None:
    """Explained variance, normalised MSE, L0 and dead latents on held-out intros."""
    from ..sae.corpus import wiki_texts
    from ..sae.evaluate import sae_quality, site_states

    s, m, tok, site = _load(sae, model, allow_network, device=device, dtype=dtype)
    q = sae_quality(s, site_states(m, tok, wiki_texts()[1][:texts], site, progress=True)).as_dict()
    if as_json:
        print(json.dumps(q))
    else:
        Console().print(_quality_table(f"{sae} on {model} (held-out intros, first token skipped)", q))


@sae_app.command("labels")
def labels_cmd(sae: str = typer.Argument("default", help=SAE_HELP),
               model: str = typer.Option("smollm2-135m", "--model", "-m"),
               show: list[int] = typer.Option(None, "--show", help="latent ids to print (default: 10 most frequent)"),
               texts: int = typer.Option(300, min=1, help="held-out intros to label from"),
               allow_network: bool = typer.Option(False),
               device: str = options.device_option(), dtype: str = options.dtype_option()) -> None:
    """Compute (once, cached) and show concept labels: top contexts and promoted tokens."""
    from ..sae.labels import concept_labels

    s, m, tok, _ = _load(sae, model, allow_network, device=device, dtype=dtype)
    labels = concept_labels(m, tok, s, n_texts=texts, sae_path=sae if Path(sae).is_dir() else None, progress=True)
    ids = list(show) if show else sorted(range(len(labels)), key=lambda i: -labels[i].frequency)[:10]
    t = Table(title=f"concept labels of {sae}")
    for col in ("id", "label", "freq", "promotes", "top context"):
        t.add_column(col, overflow="fold")
    for i in ids:
        info = labels[i]
        ctx = info.contexts[0]["text"] if info.contexts else ""
        t.add_row(str(i), info.label, f"{info.frequency:.4f}", " ".join(info.promoted[:5]), ctx)
    Console().print(t)
    alive = sum(1 for x in labels.infos if x.label != "(dead)")
    Console().print(f"{alive}/{len(labels)} latents fired on {labels.meta.get('n_tokens')} tokens")


@sae_app.command("select")
def select_cmd(sae: str = typer.Argument("default", help=SAE_HELP),
               model: str = typer.Option("smollm2-135m", "--model", "-m"),
               texts: int = typer.Option(64, min=1, help="held-out intros"),
               k: int = typer.Option(4, min=1, help="latents ablated per token"),
               max_length: int = typer.Option(128, min=2, help="tokens per text"),
               as_json: bool = typer.Option(False, "--json"),
               allow_network: bool = typer.Option(False),
               device: str = options.device_option(), dtype: str = options.dtype_option()) -> None:
    """Ablate each selection rule's top-k concepts per token; report the rise in next-token loss."""
    from ..sae.corpus import wiki_texts
    from ..sae.selection import compare_selection

    s, m, tok, _ = _load(sae, model, allow_network, device=device, dtype=dtype)
    res = compare_selection(m, tok, s, wiki_texts()[1][:texts], k=k, max_length=max_length)
    if as_json:
        print(json.dumps(res.as_dict()))
        return
    t = Table(title=f"ablating top-{k} concepts per token ({res.n_tokens} tokens); clean loss {res.clean_loss:.4f}, "
                    f"SAE spliced {res.splice_loss:.4f}")
    t.add_column("rule")
    t.add_column("loss")
    t.add_column("Δ loss")
    for rule, value in res.ablated_loss.items():
        t.add_row(rule, f"{value:.4f}", f"{value - res.clean_loss:+.4f}")
    Console().print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(sae_app, name="sae")
