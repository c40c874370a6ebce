"""Steering sweeps: one prompt, one concept, several steering scales, and what each scale does.

For every scale the sweep generates greedily under steering and measures, at the prompt's last
token (where the first new token is predicted):

- ``activation``: the steered concept's activation at the SAE site (teacher or any model steered
  by adding ``scale * W_dec[concept]`` to its residual stream), i.e. the SAE's encoding of the
  steered state; for a CoCoMix student, ``logit``: the concept's predicted logit after steering
  (what its TopK sees) and ``chosen``: whether the TopK picked it;
- ``targets``: the probability of chosen target tokens;
- ``kl``: KL(steered || unsteered) of the next-token distribution, in nats;
- ``perplexity``: the perplexity of the steered continuation under the *unsteered* model
  (a fluency cost: how surprising the steered text is to the model left alone).

Scale semantics are those of :mod:`probelab.models.cocomix.steering`: with an SAE the scale is
the coefficient of the decoder direction (0 = unsteered); for a CoCoMix model it multiplies the
concept's logit (1 = unsteered).

>>> from probelab.models.tiny import tiny_llama, tiny_tokenizer
>>> from probelab.sae.tiny import tiny_sae
>>> sweep = steering_sweep(tiny_llama(), tiny_tokenizer(), "Hi", 3, parse_sweep("0:40:3"),
...                        sae=tiny_sae(), max_new_tokens=4, label="(tiny)")
>>> [r.scale for r in sweep.rows], sweep.rows[0].text == sweep.unsteered, sweep.rows[0].kl
([0.0, 20.0, 40.0], True, 0.0)
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .errors import ProbelabError

MAX_SCALES = 101


# ---- scales ----------------------------------------------------------------------------------------
def check_scales(scales: Iterable[float]) -> list[float]:
    """The scales as floats; one-line error when empty, not a number or not finite."""
    out = []
    for s in scales:
        try:
            v = float(s)
        except (TypeError, ValueError):
            raise ProbelabError(f"steering scale {s!r} is not a number") from None
        if not math.isfinite(v):
            raise ProbelabError(f"steering scale {s!r} is not finite")
        out.append(v)
    if not out:
        raise ProbelabError("no steering scale given")
    if len(out) > MAX_SCALES:
        raise ProbelabError(f"{len(out)} steering scales; at most {MAX_SCALES} in one sweep")
    return out


def parse_sweep(spec: str) -> list[float]:
    """``"START:STOP:N"`` → N evenly spaced scales from START to STOP, both included.

    >>> parse_sweep("0:80:5")
    [0.0, 20.0, 40.0, 60.0, 80.0]
    >>> parse_sweep("-2:2:1")
    [-2.0]
    """
    parts = str(spec).strip().split(":")
    if len(parts) != 3:
        raise ProbelabError(f"--sweep {spec!r}: expected START:STOP:N, e.g. 0:80:5")
    try:
        start, stop = float(parts[0]), float(parts[1])
    except ValueError:
        raise ProbelabError(f"--sweep {spec!r}: START and STOP must be numbers") from None
    try:
        n = int(parts[2])
    except ValueError:
        raise ProbelabError(f"--sweep {spec!r}: N must be a whole number") from None
    if n < 1:
        raise ProbelabError(f"--sweep {spec!r}: N must be at least 1")
    check_scales([start, stop])
    if n == 1:
        return check_scales([start])
    return check_scales([start + (stop - start) * i / (n - 1) for i in range(n)])


# ---- results ---------------------------------------------------------------------------------------
@dataclass
class SweepRow:
    scale: float
    text: str                      # the steered greedy continuation (new text only)
    activation: float | None       # concept activation at the SAE site (SAE steering)
    logit: float | None            # the concept's predicted logit after steering (CoCoMix)
    chosen: bool | None            # CoCoMix: the concept is in the TopK
    targets: dict[str, float]      # target token -> probability of it as the next token
    kl: float                      # KL(steered || unsteered) of the next-token distribution (nats)
    perplexity: float | None       # of the continuation under the unsteered model (None: empty text)
    changed: bool                  # the continuation differs from the unsteered one


@dataclass
class SweepResult:
    prompt: str
    concept: int
    label: str
    kind: str                      # "sae" (residual + scale x decoder direction) or "cocomix"
    how: str
    unsteered: str
    rows: list[SweepRow] = field(default_factory=list)
    target_tokens: dict[str, int] = field(default_factory=dict)

    @property
    def measure(self) -> str:
        return "activation" if self.kind == "sae" else "logit"

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "concept": self.concept, "label": self.label, "kind": self.kind,
                "how": self.how, "unsteered": self.unsteered, "target_tokens": self.target_tokens,
                "rows": [asdict(r) for r in self.rows]}

    def json_rows(self) -> list[dict]:
        """One dict per scale with the concept and its label on every row (``probelab steer --json``)."""
        return [{"concept": self.concept, "label": self.label, **asdict(r)} for r in self.rows]


# ---- the sweep -------------------------------------------------------------------------------------
def _device(model):
    """Where input ids go: the token embedding's device (the first shard of a ``device_map`` model)."""
    from .models.devices import input_device

    return input_device(model)


def target_ids(tok, targets: Sequence[str]) -> dict[str, int]:
    """``{target text: token id}``: each target must be one token (write a leading space for a word,
    " Paris"); a text of several tokens is refused, as by ``probelab lens``, rather than read by its
    first piece."""
    out = {}
    for t in targets:
        if not isinstance(t, str) or not t:
            raise ProbelabError("a target token is empty")
        ids = tok(t, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ProbelabError(f"target {t!r} encodes to no token")
        if len(ids) != 1:
            pieces = [tok.decode([i]) for i in ids]
            raise ProbelabError(f"target {t!r} is {len(ids)} tokens {pieces}; give a single token "
                                "(often with a leading space, e.g. ' Paris')")
        out[t] = int(ids[0])
    return out


def _generate(model, tok, ids, attn, max_new_tokens: int, cocomix: bool):
    import torch

    with torch.no_grad():
        if cocomix:
            return model.generate(ids, attn, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=max_new_tokens,
                              do_sample=False, pad_token_id=pad)


def _site_capture(model, index: int, held: dict):
    """A hook that keeps the (already steered) residual state at SAE site ``index``; registered after the
    steering hook on the same module, so it sees the steered value."""
    from .capture import decoder_layers

    layers = decoder_layers(model)
    if index == 0:
        def pre(_m, args, kwargs):
            held["h"] = (args[0] if args else kwargs["hidden_states"]).detach()

        return layers[0].register_forward_pre_hook(pre, with_kwargs=True)

    def post(_m, _args, out):
        held["h"] = (out[0] if isinstance(out, tuple) else out).detach()

    return layers[index - 1].register_forward_hook(post)


def _continuation_nll(model, ids, attn, n_prompt: int, cocomix: bool) -> float | None:
    """Mean NLL of the tokens after ``n_prompt`` (unsteered ``model``), or ``None`` when there are none."""
    import torch

    if ids.shape[1] <= n_prompt:
        return None
    with torch.no_grad():
        logits = model(ids, attn).logits if cocomix else model(input_ids=ids, attention_mask=attn).logits
    logp = torch.log_softmax(logits[0, n_prompt - 1:-1].float(), dim=-1)
    nll = -logp.gather(-1, ids[0, n_prompt:, None]).squeeze(-1)
    return float(nll.mean())


def steering_sweep(model, tok, prompt: str, concept: int, scales: Iterable[float], sae=None,
                   max_new_tokens: int = 20, targets: Sequence[str] = (), label: str | None = None,
                   progress: bool = False) -> SweepResult:
    """Steer ``model`` by ``concept`` at each of ``scales`` and measure the dose-response (module docstring).

    ``sae`` is needed unless ``model`` is a CoCoMix model. ``label`` is the concept's label, shown with
    every output; ``None`` looks it up with :func:`concept_label` (may build the SAE's labels once).
    """
    import torch
    from tqdm.auto import tqdm

    from .models.cocomix import CoCoMixForCausalLM, steer_cocomix, steer_residual

    if not isinstance(prompt, str) or not prompt.strip():
        raise ProbelabError("the prompt is empty")
    if isinstance(concept, bool) or not isinstance(concept, int):
        raise ProbelabError(f"concept id must be a whole number, got {concept!r}")
    scales = check_scales(scales)
    cocomix = isinstance(model, CoCoMixForCausalLM)
    if cocomix:
        from .models.cocomix.steering import check_concepts

        check_concepts({concept: 1.0}, model.cocomix.n_concepts)
        how = "concept logit x scale before TopK (CoCoMix; 1 = unsteered)"
        index = None
    else:
        if sae is None:
            raise ProbelabError("this model is not a CoCoMix model: give an SAE to steer its residual stream")
        from .models.cocomix.steering import sae_direction
        from .sae.load import check_sae_fits

        index = check_sae_fits(sae, model)
        sae_direction(sae, concept)  # id in range
        how = "residual stream + scale x SAE decoder direction (0 = unsteered)"
    if label is None:
        label = concept_label(model, tok, concept, sae=sae)
    tids = target_ids(tok, list(targets))
    device = _device(model)
    enc = tok(prompt, return_tensors="pt")
    ids, attn = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    n_prompt = ids.shape[1]

    def forward(x, mask):
        with torch.no_grad():
            return model(x, mask) if cocomix else model(input_ids=x, attention_mask=mask)

    plain_out = _generate(model, tok, ids, attn, max_new_tokens, cocomix)
    unsteered = tok.decode(plain_out[0, n_prompt:], skip_special_tokens=True)
    base_logp = torch.log_softmax(forward(ids, attn).logits[0, -1].float(), dim=-1)
    rows = []
    for s in tqdm(scales, desc="steering sweep", unit="scale", disable=not progress):
        steering = steer_cocomix(model, {concept: s}) if cocomix else steer_residual(model, sae, {concept: s})
        held: dict = {}
        with steering:
            out = _generate(model, tok, ids, attn, max_new_tokens, cocomix)
            handle = None if cocomix else _site_capture(model, index, held)
            try:
                step = forward(ids, attn)
            finally:
                if handle is not None:
                    handle.remove()
        text = tok.decode(out[0, n_prompt:], skip_special_tokens=True)
        logp = torch.log_softmax(step.logits[0, -1].float(), dim=-1)
        kl = float((logp.exp() * (logp - base_logp)).sum().clamp_min(0.0))
        activation = logit = chosen = None
        if cocomix:
            logit = float(step.concept_logits[0, -1, concept])
            chosen = bool((step.concept_ids[0, -1] == concept).any())
        else:
            h = held["h"][0, -1:].to(next(sae.parameters()).dtype)
            with torch.no_grad():
                activation = float(sae.encode(h)[0, concept])
        out_mask = torch.ones_like(out)
        nll = _continuation_nll(model, out, out_mask, n_prompt, cocomix)
        rows.append(SweepRow(scale=s, text=text, activation=activation, logit=logit, chosen=chosen,
                             targets={t: float(logp[i].exp()) for t, i in tids.items()}, kl=kl,
                             perplexity=None if nll is None else float(math.exp(min(nll, 700.0))),
                             changed=text != unsteered))
    return SweepResult(prompt=prompt, concept=int(concept), label=label, kind="cocomix" if cocomix else "sae",
                       how=how, unsteered=unsteered, rows=rows,
                       target_tokens={t: i for t, i in tids.items()})


# ---- labels ----------------------------------------------------------------------------------------
def concept_label(model, tok, concept: int, sae=None, labels=None, teacher=None, sae_path=None) -> str:
    """The concept's label (:mod:`probelab.sae.labels`), or a short reason in brackets when there is none.

    ``sae_path``: the SAE's folder when it came from one, so the labels other commands cached for
    that folder are found.

    For a CoCoMix model the labels are its teacher SAE's: pass ``labels`` (a
    :class:`~probelab.sae.labels.ConceptLabels`) or ``teacher=(teacher_model, teacher_tok)`` with ``sae``.
    """
    from .models.cocomix import CoCoMixForCausalLM

    if labels is None:
        if sae is None:
            return "(no label: no SAE given)"
        from .sae.labels import display_labels  # the full labels when cached, else the quick ones

        lm, lt = (model, tok) if not isinstance(model, CoCoMixForCausalLM) else (teacher or (None, None))
        if lm is None:
            return "(no label: the teacher model is not loaded)"
        try:
            labels = display_labels(lm, lt, sae, sae_path=sae_path, progress=True)
        except ProbelabError as e:
            return f"(no label: {e})"
    if isinstance(model, CoCoMixForCausalLM) and len(labels) != model.cocomix.n_concepts:
        return f"(no label: the SAE has {len(labels)} latents, the model predicts {model.cocomix.n_concepts})"
    if not 0 <= int(concept) < len(labels):
        return f"(no label: concept {concept} is out of range 0..{len(labels) - 1})"
    return labels.label(int(concept))


def resolve_sae(source: str, model, allow_network: bool | None = None):
    """``tiny`` (a random SAE sized for ``model``, for the tiny models), ``default`` or an SAE folder."""
    from .sae import check_sae_fits, load_sae

    source = (source or "").strip()
    if source == "tiny":
        from .sae.tiny import tiny_sae

        sae = tiny_sae(d_in=int(model.config.hidden_size), hook_name="model.layers.1")
    else:
        if source == "default":  # before the default SAE is loaded (or trained)
            from .sae.load import check_default_fits

            check_default_fits(model)
        sae = load_sae(source, allow_network=allow_network)
    check_sae_fits(sae, model)
    return sae


# ---- presentation ----------------------------------------------------------------------------------
def fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


COLUMN_NOTES = {
    "activation": "the concept's SAE activation at the prompt's last token, steered",
    "logit": "the concept's predicted logit at the prompt's last token, after steering",
    "chosen": "the concept is in the CoCoMix TopK",
    "kl": "KL(steered || unsteered) of the next-token distribution, nats",
    "ppl": "perplexity of the steered continuation under the unsteered model",
    "p(target)": "probability of the target as the next token",
}


def sweep_table_rows(result: SweepResult) -> tuple[list[str], list[list[str]]]:
    """Column names and formatted cells of the dose-response table (CLI, HTML)."""
    cols = ["scale", result.measure] + (["chosen"] if result.kind == "cocomix" else [])
    cols += [f"p({t!r})" for t in result.target_tokens] + ["kl", "ppl", "continuation"]
    rows = []
    for r in result.rows:
        cells = [fmt(r.scale), fmt(r.activation if result.kind == "sae" else r.logit)]
        if result.kind == "cocomix":
            cells.append(fmt(r.chosen))
        cells += [fmt(r.targets[t]) for t in result.target_tokens]
        cells += [fmt(r.kl), fmt(r.perplexity), r.text + ("" if r.changed else "  (= unsteered)")]
        rows.append(cells)
    return cols, rows


def sweep_figure(result: SweepResult):
    """Dose-response plot: the concept measure, target probabilities and the fluency costs against the scale."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x = [r.scale for r in result.rows]
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        f"concept {result.measure}", "p(target) as next token", "fluency cost"),
        specs=[[{}, {}, {"secondary_y": True}]])
    y = [r.activation if result.kind == "sae" else r.logit for r in result.rows]
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=result.measure, legendgroup="m"), row=1, col=1)
    for t in result.target_tokens:
        fig.add_trace(go.Scatter(x=x, y=[r.targets[t] for r in result.rows], mode="lines+markers",
                                 name=f"p({t!r})", legendgroup="t"), row=1, col=2)
    if not result.target_tokens:
        fig.add_annotation(text="no target token chosen (--target)", showarrow=False, xref="x2 domain",
                           yref="y2 domain", x=0.5, y=0.5)
    fig.add_trace(go.Scatter(x=x, y=[r.kl for r in result.rows], mode="lines+markers", name="KL (nats)",
                             legendgroup="f"), row=1, col=3)
    fig.add_trace(go.Scatter(x=x, y=[r.perplexity for r in result.rows], mode="lines+markers",
                             name="perplexity", line=dict(dash="dot"), legendgroup="f"), row=1, col=3, secondary_y=True)
    fig.update_xaxes(title_text="scale")
    fig.update_yaxes(tickformat=".3~g")
    fig.update_layout(height=380, margin=dict(t=60, l=50, r=50, b=50),
                      title=f"concept {result.concept} ({result.label}): {result.how}",
                      legend=dict(orientation="h", yanchor="top", y=-0.22, x=0))
    return fig


def sweep_html(result: SweepResult, model_name: str = "") -> str:
    """A self-contained offline page (plotly inlined) with the plot and the dose-response table."""
    from .analysis.report import fig_html, page

    cols, rows = sweep_table_rows(result)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    notes = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in COLUMN_NOTES.items()
                    if k in cols or (k == "p(target)" and result.target_tokens))
    title = f"steering sweep: concept {result.concept} ({result.label})"
    content = (f"<h1>{html.escape(title)}</h1>"
               f"<p>model <b>{html.escape(model_name)}</b>; {html.escape(result.how)}; greedy decoding.</p>"
               f"<p>prompt: <code>{html.escape(result.prompt)}</code><br>unsteered: "
               f"<code>{html.escape(result.unsteered)}</code></p>"
               + fig_html(sweep_figure(result), "fig-sweep")
               + f"<table id=\"tbl-sweep\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
               + f"<ul class=\"note\">{notes}</ul>")
    return page(title, content)


def write_sweep(result: SweepResult, out: str | Path, model_name: str = "", overwrite: bool = False) -> Path:
    """``out/sweep.html`` (offline) and ``out/sweep.json``, written atomically."""
    from .paths import atomic_dir

    out = Path(out)
    with atomic_dir(out, overwrite=overwrite, kind="sweep") as tmp:
        (tmp / "sweep.html").write_text(sweep_html(result, model_name), encoding="utf-8")
        (tmp / "sweep.json").write_text(json.dumps(result.to_dict(), indent=1), encoding="utf-8")
    return out
