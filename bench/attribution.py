"""Concept-labelling throughput on the embedded teacher: batched ConceptLabeler vs a naive per-token loop.

    flock /tmp/probelab-heavy.lock .venv/bin/python bench/attribution.py

Batched: ``ConceptLabeler`` on a batch of held-out Wikipedia intros (one forward + one backward per
batch), for the official variant (sequence loss) and the paper variant (next-token loss through
diagonal-gradient attention). Naive: the literal per-token computation of Eq. 1: for every
position t, run the prefix and backpropagate that position's next-token loss alone. Both label
the same tokens; the last line counts the FLOPs of one batched pass (FlopCounterMode) and divides
the measured bf16 matmul peak (bench/gemm_peak.py) by them: the throughput ceiling of an exact
attribution pass on this CPU; the script checks that the paper variant's batched labels equal the naive ones,
and prints tokens/s and the ratios measured in this run. Uses the cached default SAE if it exists,
else a random TopK SAE of the same shape (throughput does not depend on the weights).

It also times one official bf16 batch with the matmul weights cast once per model (what
``attribute`` does) against autocast's cast on every call, interleaved, and the casts alone;
``--profile`` adds a torch.profiler breakdown of one pass by kind of op (matmuls, casts/copies,
elementwise, softmax/CE). Profile on a quiet machine: under heavy load every op, however small,
takes a scheduler slice and the breakdown says nothing.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from probelab.models import load_model
from probelab.sae import ConceptLabeler, check_sae_fits
from probelab.sae.corpus import wiki_texts
from probelab.sae.encode import encode_parts, latent_grad
from probelab.sae.teacher import residual_leaf
from probelab.sae.train import default_sae_path


def naive_labels(model, sae, ids: torch.Tensor, site: int, k: int) -> torch.Tensor:
    """Eq. 1 one token at a time: prefix forward, that position's loss, backward, top-k."""
    T = ids.shape[1]
    out = torch.full((T, k), -100, dtype=torch.long)
    for t in range(T - 1):
        prefix = ids[:, :t + 1]
        with residual_leaf(model, site) as leaf, torch.enable_grad():
            logits = model(input_ids=prefix, use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits[0, t], ids[0, t + 1])
            (g,) = torch.autograd.grad(loss, leaf.h)
        with torch.no_grad():
            pre, _ = encode_parts(sae, leaf.h.detach())
        score = pre[0, t] * latent_grad(sae, pre, g)[0, t]
        out[t] = torch.topk(score, k).indices
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=128, help="tokens per text")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--naive-texts", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true",
                    help="also profile one official bf16 pass (torch.profiler): time per kind of op")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model("smollm2-135m")
    if (default_sae_path() / "cfg.json").is_file():
        from probelab.sae import load_sae

        sae, which = load_sae(default_sae_path()), "default SAE"
    else:
        from probelab.sae.tiny import tiny_sae

        sae, which = tiny_sae(d_in=576, d_sae=4608, k=32, hook_name="model.layers.12"), "random 4608x32 TopK SAE"
    site = check_sae_fits(sae, model)
    texts = [t for t in wiki_texts()[1] if len(tok(t)["input_ids"]) >= args.tokens][:args.texts]
    ids = torch.stack([torch.tensor(tok(t)["input_ids"][:args.tokens]) for t in texts])
    mask = torch.ones_like(ids)
    n_tokens = ids.numel()
    print(f"teacher smollm2-135m, {which}, site resid {site}; {len(texts)} texts x {args.tokens} tokens, "
          f"batch {args.batch}, {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}")
    rates = {}
    labels = {}
    for name, variant, amp, attn in (("official", "official", None, "eager"), ("paper", "paper", None, None),
                                     ("official-bf16", "official", torch.bfloat16, "eager"),
                                     ("official-bf16-sdpa", "official", torch.bfloat16, None),
                                     ("paper-bf16", "paper", torch.bfloat16, None)):
        labeler = ConceptLabeler(model, sae, k_attr=4, variant=variant, batch_size=args.batch, autocast=amp,
                                 attention=attn)
        labeler(ids[:1, :16], mask[:1, :16])  # warm-up
        t0 = time.perf_counter()
        labels[name] = labeler(ids, mask)
        dt = time.perf_counter() - t0
        rates[name] = n_tokens / dt
        print(f"batched {name:14s}: {n_tokens} tokens in {dt:6.1f} s = {rates[name]:8.0f} tokens/s")
    # the weight casts attribute() no longer repeats: each pass under autocast used to re-cast every matmul weight
    from probelab.sae import attribution as attribution_module

    batch, bmask = ids[:args.batch], mask[:args.batch]
    weights = [m.weight for m in model.modules() if type(m).__name__ in ("Linear", "Conv1D")]
    timing = {}
    for once in (False, True, False, True):  # interleaved: the machine's load moves both alike
        attribution_module.CAST_WEIGHTS_ONCE = once
        t0 = time.perf_counter()
        attribution_module.attribute(model, sae, batch, bmask, "official", autocast=torch.bfloat16, attention="eager")
        timing.setdefault(once, []).append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for w in weights:
        w.detach().to(torch.bfloat16)
    cast_s = time.perf_counter() - t0
    attribution_module.CAST_WEIGHTS_ONCE = True
    per_call, once_s = min(timing[False]), min(timing[True])
    print(f"one official-bf16 batch: weights cast per call {per_call:.2f} s, cast once {once_s:.2f} s "
          f"({per_call / once_s:.2f}x); casting all {len(weights)} weights alone takes {cast_s:.2f} s "
          f"= {100 * cast_s / per_call:.0f}% of the per-call pass")
    for amp_name in ("official", "paper"):
        valid = labels[amp_name] >= 0
        same = (labels[amp_name] == labels[amp_name + "-bf16"])[valid].float().mean().item()
        print(f"{amp_name}: bf16 labels equal fp32 labels in {100 * same:.1f}% of slots")
    naive_ids = ids[:args.naive_texts]
    t0 = time.perf_counter()
    naive = torch.stack([naive_labels(model, sae, naive_ids[i:i + 1], site, 4) for i in range(naive_ids.shape[0])])
    dt = time.perf_counter() - t0
    rates["naive"] = naive_ids.numel() / dt
    print(f"naive per-token loop (paper Eq. 1): {naive_ids.numel()} tokens in {dt:6.1f} s = {rates['naive']:8.1f} tokens/s")
    same = (naive == labels["paper"][:args.naive_texts]).float().mean().item()
    print(f"paper labels batched == naive: {100 * same:.1f}% of label slots")
    for name in ("official", "paper", "official-bf16", "official-bf16-sdpa", "paper-bf16"):
        verdict = "meets" if rates[name] >= 1000 else "misses"
        print(f"ratio batched {name:18s} / naive: {rates[name] / rates['naive']:6.1f}x  ({verdict} the 1000 tokens/s target)")

    # The ceiling: matmul/attention FLOPs of one labelling pass (forward to the loss, backward to the
    # SAE site) at this CPU's measured bf16 matmul peak, i.e. with zero time for everything else.
    from torch.utils.flop_counter import FlopCounterMode

    from gemm_peak import gemm_peak

    from probelab.sae.attribution import next_token_losses, objective
    from probelab.sae.diagonal import attention_implementation

    batch, bmask = ids[:args.batch], mask[:args.batch]
    # the official pass of attribute(), with .backward() (FlopCounterMode's module tracker refuses autograd.grad)
    with FlopCounterMode(display=False) as flops:
        with residual_leaf(model, site) as leaf, attention_implementation(model, "eager"), \
                torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=batch, attention_mask=bmask, use_cache=False)
            losses, valid = next_token_losses(out.logits, batch, bmask)
            objective(losses, valid, "sequence").backward()
        with torch.no_grad():
            pre, post = encode_parts(sae, leaf.h.detach())
        latent_grad(sae, post, leaf.h.grad)
    per_token = flops.get_total_flops() / batch.numel()
    peak = gemm_peak(torch.bfloat16)
    if args.profile:
        profile_pass(model, sae, batch, bmask)
    print(f"FLOPs per token (official): {per_token / 1e6:.0f} MFLOP; bf16 matmul peak {peak:.0f} GFLOP/s "
          f"-> ceiling {peak * 1e9 / per_token:.0f} tokens/s at 100% matmul efficiency; best batched path reached "
          f"{100 * max(rates[n] for n in rates if n != 'naive') * per_token / (peak * 1e9):.0f}% of it")


KINDS = {"matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::matmul", "aten::linear"),
         "casts/copies": ("aten::copy_", "aten::_to_copy", "aten::to", "aten::cat", "aten::fill_", "aten::zero_"),
         "softmax/CE": ("aten::_softmax", "aten::_log_softmax", "aten::_log_softmax_backward_data",
                        "aten::_softmax_backward_data", "aten::nll_loss_forward", "aten::nll_loss_backward")}


def profile_pass(model, sae, batch, bmask) -> None:
    """Self CPU time of one official bf16 attribute() pass, by kind of op (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    from probelab.sae import attribute

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        attribute(model, sae, batch, bmask, "official", autocast=torch.bfloat16, attention="eager")
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    kind_of = {name: kind for kind, names in KINDS.items() for name in names}
    by_kind: dict[str, float] = {}
    for e in events:
        kind = kind_of.get(e.key, "elementwise/other" if e.key.startswith("aten::") else "python/autograd")
        by_kind[kind] = by_kind.get(kind, 0.0) + e.self_cpu_time_total
    print(f"profile of one official-bf16 pass ({total / 1e6:.2f} s self CPU time):")
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:18s} {100 * t / total:5.1f}%")
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
    print("  top ops: " + ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.1f}%" for e in top))


if __name__ == "__main__":
    main()
