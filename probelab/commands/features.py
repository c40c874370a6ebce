"""``probelab features``: SAE feature dashboards (offline HTML) and search over latents."""
from __future__ import annotations

import json

import typer

from ..errors import ProbelabError
from . import options


def load_model_and_sae(sae: str, model: str | None, device: str, dtype: str, allow_network: bool):
    """``(model, tokenizer, sae, sae_path)``: ``--sae tiny`` is the tiny random SAE of the tiny models."""
    from ..sae import check_sae_fits, load_sae
    from .lens import load_on

    model = model or ("tiny-llama" if sae == "tiny" else "smollm2-135m")
    m, tok = load_on(model, device, dtype, allow_network)
    if sae == "tiny":
        from ..sae.tiny import tiny_sae

        s, path = tiny_sae(d_in=int(m.config.hidden_size), hook_name="model.layers.1"), None
    else:
        if sae == "default":  # before the default SAE can start its training
            from ..sae.load import check_default_fits

            check_default_fits(m)
        s = load_sae(sae, allow_network=allow_network or None)
        path = None if sae == "default" else sae
    s = s.to(next(m.parameters()).device)
    check_sae_fits(s, m)
    return m, tok, s, path


def _index_html(title: str, rows: list[dict]) -> str:
    import html

    body = "".join(f"<tr><td><a href='latent-{r['latent']}.html'>{r['latent']}</a></td>"
                   f"<td>{html.escape(r['label'])}</td><td>{100 * r['density']:.3f}%</td>"
                   f"<td>{'dense' if r['dense'] else ''}</td></tr>" for r in rows)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>SAE latents</title><style>"
            "body{font-family:system-ui,sans-serif;margin:24px}td,th{padding:3px 10px;text-align:left}</style>"
            f"</head><body><h1>{html.escape(title)}</h1><table><tr><th>latent</th><th>label</th><th>density</th>"
            f"<th></th></tr>{body}</table></body></html>")


def features_cmd(
    sae: str = typer.Option("default", "--sae", "-s",
                            help="'default', 'tiny' (tiny models), an sae-lens folder, or '<release>:<sae_id>'"),
    model: str = typer.Option(None, "--model", "-m",
                              help="the model the SAE reads (default: smollm2-135m; tiny-llama for --sae tiny)"),
    latent: list[int] = typer.Option(None, "--latent", "-l", help="latent id (repeat for several)"),
    search: str = typer.Option(None, "--search", help="list latents whose label, top tokens or promoted tokens "
                                                      "contain WORD"),
    out: str = typer.Option(None, "--out", "-o", help="write latent-N.html (self-contained, opens offline) and "
                                                      "latent-N.json per latent, plus index.html, to this folder"),
    min_density: float = typer.Option(0.0, help="search: only latents firing on at least this share of tokens"),
    max_density: float = typer.Option(1.0, help="search: only latents firing on at most this share of tokens"),
    limit: int = typer.Option(20, min=1, help="search: rows shown"),
    n_texts: int = typer.Option(300, min=1, help="held-out texts scanned (once per SAE and model; cached)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    device: str = options.device_option(),
    dtype: str = options.dtype_option(),
    overwrite: bool = options.overwrite_option(),
    allow_network: bool = options.allow_network_option(),
) -> None:
    """SAE feature dashboards: density, activation histogram, contexts, output tokens, label.

    Scans held-out text once per SAE and model (cached); then --latent N shows or (--out) writes a latent's
    dashboard, --search WORD lists latents by label or token.
    """
    if out is not None and not latent:
        raise ProbelabError("--out writes latent dashboards: give --latent N")
    if not latent and search is None:
        raise ProbelabError("give --latent N (a dashboard) or --search WORD (a list of latents)")
    if not 0.0 <= min_density <= max_density <= 1.0:
        raise ProbelabError("--min-density and --max-density must satisfy 0 <= min <= max <= 1")
    if out is not None:
        from ..paths import check_out

        check_out(out, "features", overwrite)
    from ..sae.features import feature_store, latent_html

    m, tok, s, path = load_model_and_sae(sae, model, device, dtype, allow_network)
    d_sae = int(s.cfg.d_sae)
    for i in latent or []:  # before the scan
        if not 0 <= i < d_sae:
            raise ProbelabError(f"unknown latent {i}: this SAE has {d_sae} latents (0..{d_sae - 1})")
    store = feature_store(m, tok, s, n_texts=n_texts, sae_path=path, progress=True)
    result: dict = {"sae": sae, "model": model or ("tiny-llama" if sae == "tiny" else "smollm2-135m"),
                    "d_sae": store.d_sae, "n_tokens": store.n_tokens}
    if search is not None:
        hits = store.search(search, min_density, max_density)
        result["search"] = {"word": search, "n_matches": len(hits), "latents": hits[:limit]}
    dashes = [store.latent(i) for i in (latent or [])]
    if dashes:
        result["latents"] = dashes
    if out is not None:
        from ..paths import atomic_dir

        title = f"SAE {sae} on {result['model']}:"
        with atomic_dir(out, overwrite=overwrite, kind="features") as tmp:
            for d in dashes:
                (tmp / f"latent-{d['latent']}.html").write_text(latent_html(d, title), encoding="utf-8")
                (tmp / f"latent-{d['latent']}.json").write_text(json.dumps(d), encoding="utf-8")
            (tmp / "index.html").write_text(_index_html(f"SAE {sae} on {result['model']}", dashes), encoding="utf-8")
        result["out"] = str(out)
    if as_json:
        print(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if search is not None:
        t = Table(title=f"latents matching {search!r}: {len(hits)} (showing {min(limit, len(hits))})")
        for col in ("latent", "label", "density", "top tokens", "promoted", "match"):
            t.add_column(col, overflow="fold")
        for r in hits[:limit]:
            t.add_row(str(r["latent"]), r["label"], f"{100 * r['density']:.3f}%" + (" dense" if r["dense"] else ""),
                      " ".join(map(repr, r["top_tokens"])), " ".join(map(repr, r["promoted"])), ", ".join(r["match"]))
        console.print(t)
    for d in dashes:
        flags = " (dense)" if d["dense"] else " (dead)" if d["dead"] else ""
        console.print(f"latent {d['latent']} [bold]{d['label']}[/bold]{flags}: density {100 * d['density']:.3f}% "
                      f"({d['count']} of {d['n_tokens']} tokens)")
        console.print("  promoted: " + " ".join(repr(x["token"]) for x in d["promoted"][:8]))
        console.print("  suppressed: " + " ".join(repr(x["token"]) for x in d["suppressed"][:8]))
        for c in d["top"][:5]:
            console.print(f"  {c['act']:8.3f}  {c['left']!r} [[{c['token']!r}]] {c['right']!r}", markup=False,
                          highlight=False)
    if out is not None:
        console.print(f"wrote {len(dashes)} dashboard(s) to {out}")


def register(app: typer.Typer) -> None:
    app.command("features")(features_cmd)
