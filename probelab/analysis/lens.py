"""Logit lens per branch: what each layer would predict if the model stopped there.

For every layer and every token, a hidden state ``h`` is read as a next-token distribution through
the model's own final norm and unembedding, ``softmax(W_U norm(h))``. Streams come from
:func:`probelab.capture` (``select="all"``): ``resid`` at every layer (0 = embeddings, the last one
= the last block's raw output, so the last layer's lens *is* the model's output), and for a
Control LLM the ``pretrained``, ``expanded`` and ``merged`` branches at its merged layers. That
shows where the expanded branch starts to predict something new while the pretrained one stays put.

Per stream, layer and token: the top-k tokens and their probabilities, the probability and rank
(1 = top) of a *target* token, ``KL(final || layer)`` in nats (how far the layer's distribution is
from the model's final one) and the entropy in nats. The target is, per position, the model's own
greedy next token unless one is given.

>>> from probelab.models.tiny import tiny_llama, tiny_tokenizer
>>> res = lens(tiny_llama(), tiny_tokenizer(), "king is to queen")
>>> res.streams["resid"].layers
[0, 1, 2, 3, 4]
>>> row = res.rows()[-1]              # resid, last layer, last token
>>> row["top"][0]["token"] == res.greedy_token, row["target_rank"], round(row["kl"], 6)
(True, 1, 0.0)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ProbelabError

BRANCH_STREAMS = ("pretrained", "expanded", "merged")
_NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm", "norm_f")


@dataclass
class LensStream:
    """The lens of one stream: arrays ``[n_layers, n_tokens]`` (top-k: ``[n_layers, n_tokens, k]``)."""

    name: str
    layers: list[int]
    top_ids: np.ndarray
    top_probs: np.ndarray
    target_prob: np.ndarray
    target_rank: np.ndarray
    kl: np.ndarray
    entropy: np.ndarray

    def metric(self, name: str) -> np.ndarray:
        """``[n_layers, n_tokens]`` of ``target_prob``, ``target_rank``, ``kl``, ``entropy`` or ``top_prob``."""
        if name == "top_prob":
            return self.top_probs[..., 0]
        if name not in ("target_prob", "target_rank", "kl", "entropy"):
            raise ProbelabError(f"unknown lens metric {name!r}; choose target_prob, target_rank, kl, entropy, top_prob")
        return getattr(self, name)


@dataclass
class LensResult:
    text: str
    tokens: list[str]          # the input tokens, decoded
    token_ids: list[int]
    target_ids: list[int]      # per position: the token whose probability / rank is read
    targets: list[str]
    target_given: bool         # False: the target is the model's greedy prediction at each position
    streams: dict[str, LensStream]
    vocab: dict[int, str] = field(default_factory=dict)  # decoded strings of every token id in the result
    meta: dict = field(default_factory=dict)

    @property
    def greedy_id(self) -> int:
        """The model's greedy next token after the whole text (the last layer's top token at the last position)."""
        return int(self.streams["resid"].top_ids[-1, -1, 0])

    @property
    def greedy_token(self) -> str:
        return self.vocab[self.greedy_id]

    def rows(self, position: int = -1, streams: list[str] | None = None) -> list[dict]:
        """One dict per (stream, layer) at token ``position``: top-k, target probability / rank, KL, entropy."""
        n = len(self.tokens)
        if not -n <= position < n:
            raise ProbelabError(f"position {position} is outside the text's {n} tokens")
        p = position % n
        out = []
        for name in streams or list(self.streams):
            s = self.streams[name]
            for li, layer in enumerate(s.layers):
                out.append({
                    "stream": name, "layer": int(layer), "position": p, "token": self.tokens[p],
                    "top": [{"token": self.vocab[int(i)], "id": int(i), "prob": float(q)}
                            for i, q in zip(s.top_ids[li, p], s.top_probs[li, p])],
                    "target": self.targets[p], "target_prob": float(s.target_prob[li, p]),
                    "target_rank": int(s.target_rank[li, p]), "kl": float(s.kl[li, p]),
                    "entropy": float(s.entropy[li, p]),
                })
        return out

    def to_dict(self, all_positions: bool = True) -> dict:
        """JSON-ready: the text, tokens, targets, the greedy next token, and rows at the last position
        (``rows``) plus, with ``all_positions``, per stream the full ``[layer][token]`` grids."""
        d = {"text": self.text, "tokens": self.tokens, "targets": self.targets, "target_given": self.target_given,
             "greedy_next_token": self.greedy_token, "greedy_next_id": self.greedy_id, "meta": self.meta,
             "rows": self.rows(-1)}
        if all_positions:
            d["grids"] = {
                name: {"layers": s.layers, "target_prob": s.target_prob.round(6).tolist(),
                       "target_rank": s.target_rank.tolist(), "kl": s.kl.round(6).tolist(),
                       "entropy": s.entropy.round(6).tolist(),
                       "top_token": [[self.vocab[int(i)] for i in row] for row in s.top_ids[..., 0]]}
                for name, s in self.streams.items()}
        return d


def final_norm(model) -> torch.nn.Module:
    """The final norm of an HF decoder (``model.norm``, ``transformer.ln_f``, ...; Control LLM included)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    for obj in (decoder, getattr(model, "model", None), getattr(model, "transformer", None), model):
        if obj is None:
            continue
        for name in _NORM_NAMES:
            mod = getattr(obj, name, None)
            if isinstance(mod, torch.nn.Module):
                return mod
    raise ProbelabError(f"{type(model).__name__}: no final norm found (looked for {', '.join(_NORM_NAMES)})")


def unembed(model, h: torch.Tensor) -> torch.Tensor:
    """Logits of residual states ``h [..., d]`` read through the final norm and the unembedding (model dtype),
    with the model's final logit soft-capping if its config has one."""
    norm, head = final_norm(model), model.get_output_embeddings()
    w = head.weight
    logits = head(norm(h.to(device=w.device, dtype=w.dtype)))
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "base_config", None) or cfg
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _target_ids(tok, target: str | int | None) -> int | None:
    if target is None:
        return None
    if isinstance(target, int):
        if not 0 <= target < len(tok):
            raise ProbelabError(f"target token id {target} is outside the vocabulary (size {len(tok)})")
        return target
    if not isinstance(target, str) or target == "":
        raise ProbelabError("the target token is empty")
    ids = tok(target, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = [tok.decode([i]) for i in ids]
        raise ProbelabError(f"target {target!r} is {len(ids)} tokens {pieces}; give a single token "
                            "(often with a leading space, e.g. ' Paris')")
    return int(ids[0])


@torch.no_grad()
def _stream_lens(model, name: str, layers: list[int], states: torch.Tensor, final_logp: torch.Tensor,
                 target_ids: torch.Tensor, k: int) -> LensStream:
    """``states [n_layers, T, d]`` → the lens arrays; ``final_logp [T, V]`` is the model's output distribution."""
    top_ids, top_probs, t_prob, t_rank, kls, ents = [], [], [], [], [], []
    p_final = final_logp.exp()
    for li in range(len(layers)):
        logits = unembed(model, states[li]).float().cpu()  # [T, V]
        logp = torch.log_softmax(logits, dim=-1)
        probs = logp.exp()
        tp, ti = probs.topk(k, dim=-1)
        top_ids.append(ti)
        top_probs.append(tp)
        t_logit = logits.gather(-1, target_ids[:, None])
        t_prob.append(probs.gather(-1, target_ids[:, None])[:, 0])
        t_rank.append((logits > t_logit).sum(-1) + 1)
        kls.append((p_final * (final_logp - logp)).sum(-1).clamp(min=0.0))
        ents.append(-(probs * logp).nan_to_num().sum(-1))
    stack = lambda xs: torch.stack(xs).numpy()
    return LensStream(name, list(layers), stack(top_ids), stack(top_probs), stack(t_prob), stack(t_rank),
                      stack(kls), stack(ents))


@torch.no_grad()
def lens(model, tokenizer, text: str, target: str | int | None = None, top_k: int = 5,
         streams: list[str] | None = None, max_tokens: int = 256) -> LensResult:
    """The logit lens of ``text`` at every layer and token, for ``resid`` and (Control LLM) each branch.

    ``target``: a single token (string or id) whose probability and rank are read at every position;
    default: at each position, the model's greedy prediction there. ``streams``: which streams
    (default: ``resid`` and, when present, ``pretrained``, ``expanded``, ``merged``). Texts longer than
    ``max_tokens`` tokens are truncated with a warning.
    """
    from ..capture import capture

    if not isinstance(text, str) or not text.strip():
        raise ProbelabError("the text is empty")
    if top_k < 1:
        raise ProbelabError("top_k must be at least 1")
    if type(model).__name__ == "CoCoMixForCausalLM":
        raise ProbelabError("the logit lens reads a plain or Control LLM decoder; a CoCoMix model is not supported")
    vocab_size = int(model.get_output_embeddings().weight.shape[0])
    top_k = min(top_k, vocab_size)
    n_ids = len(tokenizer(text)["input_ids"])
    if n_ids > max_tokens:
        warnings.warn(f"text has {n_ids} tokens; truncated to the first {max_tokens}", stacklevel=2)
    fixed = _target_ids(tokenizer, target)
    caps = capture(model, tokenizer, [text], select="all", max_length=max_tokens, progress=False)
    available = [s for s in ("resid", *BRANCH_STREAMS) if s in caps.states]
    chosen = available if streams is None else list(streams)
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise ProbelabError(f"no stream {unknown[0]!r} in this model; available: {', '.join(available)}")
    if "resid" not in chosen:
        chosen = ["resid", *chosen]  # the final distribution comes from resid's last layer
    resid = caps.stream("resid")[0]
    final_logits = unembed(model, resid[-1]).float().cpu()
    final_logp = torch.log_softmax(final_logits, dim=-1)
    T = final_logits.shape[0]
    target_ids = torch.full((T,), fixed, dtype=torch.long) if fixed is not None else final_logits.argmax(-1)
    enc = tokenizer(text, truncation=True, max_length=max_tokens)["input_ids"]
    if len(enc) != T:
        raise ProbelabError(f"tokenisation mismatch ({len(enc)} ids vs {T} captured states)")
    result_streams = {name: _stream_lens(model, name, caps.layers[name], caps.stream(name)[0], final_logp,
                                         target_ids, top_k) for name in chosen}
    ids_seen = set(enc) | set(target_ids.tolist())
    for s in result_streams.values():
        ids_seen |= set(np.unique(s.top_ids).tolist())
    vocab = {int(i): tokenizer.decode([int(i)]) for i in ids_seen}
    meta = {"model": str(getattr(model.config, "_name_or_path", "") or type(model).__name__),
            "n_layers": len(caps.layers["resid"]) - 1, "top_k": top_k, "truncated": n_ids > max_tokens,
            "merged_layers": caps.layers.get("merged", []),
            "kl": "KL(final || layer), nats", "entropy": "nats"}
    return LensResult(text, [vocab[i] for i in enc], list(enc), target_ids.tolist(),
                      [vocab[int(i)] for i in target_ids.tolist()], fixed is not None, result_streams, vocab, meta)


def branch_difference(result: LensResult, metric: str = "target_prob") -> dict[int, float]:
    """Per merged layer: max |expanded - pretrained| of ``metric`` over tokens (0 at initialisation)."""
    if "expanded" not in result.streams or "pretrained" not in result.streams:
        raise ProbelabError("branch_difference needs a Control LLM's pretrained and expanded streams")
    a, b = result.streams["pretrained"].metric(metric), result.streams["expanded"].metric(metric)
    return {int(layer): float(np.abs(a[i] - b[i]).max()) for i, layer in enumerate(result.streams["expanded"].layers)}
