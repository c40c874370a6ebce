"""Concept-labelling throughput on the embedded teacher: batched ConceptLabeler vs a naive per-token loop.

    flock /tmp/probelab-heavy.lock .venv/bin/python bench/attribution.py

Batched: ``ConceptLabeler`` on a batch of held-out Wikipedia intros (one forward + one backward per
batch), for the official variant (sequence loss) and the paper variant (next-token loss through
diagonal-gradient attention). Naive: the literal per-token computation of Eq. 1: for every
position t, run the prefix and backpropagate that position's next-token loss alone. Both label
the same tokens; the last lines count the FLOPs of one batched pass (FlopCounterMode) and divide
the measured matmul peak of each dtype (bench/gemm_peak.py) by them: the throughput ceiling of an
exact attribution pass on this CPU, and the fraction of it each path reaches against its own dtype's
ceiling and against the best dtype's. bf16 paths run only where bf16 is native (an AVX512-BF16/AMX
CPU; ``--bf16`` forces them: emulated, they are ~100x slower); the script checks that the paper variant's batched labels equal the naive ones,
and prints tokens/s and the ratios measured in this run. Uses the cached default SAE if it exists,
else a random TopK SAE of the same shape (throughput does not depend on the weights).

With bf16 it also times one official bf16 batch with the matmul weights cast once per model (what
``attribute`` does) against autocast's cast on every call, interleaved, and the casts alone;
``--profile`` adds a torch.profiler breakdown of one pass in the fastest dtype by kind of op
(matmuls, casts/copies, elementwise, softmax/CE) and the *matmul floor*: every matmul of the pass
(its shapes recorded by the profiler) timed alone, best of 5, summed: the time the matmuls need at
the speed this CPU reaches on those shapes, which is what a pass could at best approach; and the
matmuls' self time inside the pass against the ceiling, with the time the other ops would have to
fit in for the pass to reach 80%. Profile on a quiet machine: under heavy load every op, however small,
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
                    help="also profile one official pass (torch.profiler): time per kind of op, matmul floor")
    ap.add_argument("--bf16", action="store_true", help="also run the bf16 paths where bf16 is emulated")
    args = ap.parse_args()
    from probelab.models.devices import native_bf16

    with_bf16 = args.bf16 or native_bf16("cpu")
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
    paths = [("official", "official", None, "eager"), ("official-sdpa", "official", None, None),
             ("paper", "paper", None, None)]
    if with_bf16:
        paths += [("official-bf16", "official", torch.bfloat16, "eager"),
                  ("official-bf16-sdpa", "official", torch.bfloat16, None), ("paper-bf16", "paper", torch.bfloat16, None)]
    else:
        print("bf16 paths skipped: this CPU has no native bf16 (AVX512-BF16/AMX); --bf16 runs them emulated")
    for name, variant, amp, attn in paths:
        labeler = ConceptLabeler(model, sae, k_attr=4, variant=variant, batch_size=args.batch, autocast=amp,
                                 attention=attn)
        labeler(ids[:1, :16], mask[:1, :16])  # warm-up
        t0 = time.perf_counter()
        labels[name] = labeler(ids, mask)
        dt = time.perf_counter() - t0
        rates[name] = n_tokens / dt
        print(f"batched {name:14s}: {n_tokens} tokens in {dt:6.1f} s = {rates[name]:8.0f} tokens/s")
    if with_bf16:
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
    for name in rates:
        if name == "naive":
            continue
        verdict = "meets" if rates[name] >= 1000 else "misses"
        print(f"ratio batched {name:18s} / naive: {rates[name] / rates['naive']:6.1f}x  ({verdict} the 1000 tokens/s target)")

    # The ceiling: matmul/attention FLOPs of one labelling pass (forward to the loss, backward to the
    # SAE site) at this CPU's measured matmul peak per dtype, i.e. with zero time for everything else.
    from torch.utils.flop_counter import FlopCounterMode

    from gemm_peak import gemm_peak

    from probelab.sae.attribution import next_token_losses, objective
    from probelab.sae.diagonal import attention_implementation

    batch, bmask = ids[:args.batch], mask[:args.batch]
    # the official pass of attribute(), with .backward() (FlopCounterMode's module tracker refuses autograd.grad)
    with FlopCounterMode(display=False) as flops:
        with residual_leaf(model, site) as leaf, attention_implementation(model, "eager"):
            out = model(input_ids=batch, attention_mask=bmask, use_cache=False)
            losses, valid = next_token_losses(out.logits, batch, bmask)
            objective(losses, valid, "sequence").backward()
        with torch.no_grad():
            pre, post = encode_parts(sae, leaf.h.detach())
        latent_grad(sae, post, leaf.h.grad)
    per_token = flops.get_total_flops() / batch.numel()
    peaks = {"fp32": gemm_peak(torch.float32)}
    if with_bf16:
        peaks["bf16"] = gemm_peak(torch.bfloat16)
    dtype_of = lambda name: "bf16" if "bf16" in name else "fp32"  # noqa: E731
    best = max((n for n in rates if n != "naive"), key=rates.get)
    best_peak = max(peaks.values())
    print(f"FLOPs per token (official): {per_token / 1e6:.0f} MFLOP; matmul peak "
          + ", ".join(f"{d} {p:.0f} GFLOP/s (ceiling {p * 1e9 / per_token:.0f} tokens/s)" for d, p in peaks.items()))
    for name in (n for n in rates if n != "naive"):
        print(f"{name:18s} {rates[name]:6.0f} tokens/s = {100 * rates[name] * per_token / (peaks[dtype_of(name)] * 1e9):3.0f}% "
              f"of its {dtype_of(name)} ceiling")
    print(f"best path {best}: {100 * rates[best] * per_token / (best_peak * 1e9):.0f}% of the best dtype's ceiling "
          f"({best_peak * 1e9 / per_token:.0f} tokens/s; target 80%)")
    best_amp = torch.bfloat16 if dtype_of(best) == "bf16" else None
    compare_ce(model, sae, batch, bmask, best_amp)
    if args.profile:
        profile_pass(model, sae, batch, bmask, best_amp, per_token * batch.numel(), best_peak)


KINDS = {"matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::matmul", "aten::linear"),
         "casts/copies": ("aten::copy_", "aten::_to_copy", "aten::to", "aten::cat", "aten::fill_", "aten::zero_"),
         "softmax/CE": ("aten::_softmax", "aten::_log_softmax", "aten::_log_softmax_backward_data",
                        "aten::_softmax_backward_data", "aten::nll_loss_forward", "aten::nll_loss_backward")}


def profile_pass(model, sae, batch, bmask, autocast, flops: float, peak: float) -> None:
    """Self CPU time of one official attribute() pass by kind of op, and its matmul floor."""
    from torch.profiler import ProfilerActivity, profile

    from probelab.sae import attribute

    attribute(model, sae, batch, bmask, "official", autocast=autocast, attention="eager")  # warm
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        attribute(model, sae, batch, bmask, "official", autocast=autocast, attention="eager")
    wall = time.perf_counter() - t0
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    kind_of = {name: kind for kind, names in KINDS.items() for name in names}
    by_kind: dict[str, float] = {}
    for e in events:
        kind = kind_of.get(e.key, "elementwise/other" if e.key.startswith("aten::") else "python/autograd")
        by_kind[kind] = by_kind.get(kind, 0.0) + e.self_cpu_time_total
    print(f"profile of one official pass ({total / 1e6:.2f} s self CPU time, {wall:.2f} s wall under the profiler):")
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:18s} {100 * t / total:5.1f}%")
    # the pass's own matmuls, at the speed they run inside it: with every other op taking zero time,
    # this is the best fraction of the ceiling the pass could reach
    in_pass = by_kind.get("matmul", 0.0) / 1e6
    ceiling_s = flops / (peak * 1e9)
    print(f"  matmuls inside the pass: {in_pass:.2f} s self time, i.e. {100 * ceiling_s / in_pass:.0f}% of the best "
          f"shape's peak; the other ops take {(total / 1e6) - in_pass:.2f} s, and a pass can reach 80% of the "
          f"ceiling only if they take at most {max(0.0, ceiling_s / 0.8 - in_pass):.2f} s")
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
    print("  top ops: " + ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.1f}%" for e in top))
    floor = matmul_floor(prof, autocast or torch.float32)
    t0 = time.perf_counter()
    attribute(model, sae, batch, bmask, "official", autocast=autocast, attention="eager")
    plain = time.perf_counter() - t0
    print(f"matmul floor: the pass's matmuls timed alone take {floor:.2f} s of its {plain:.2f} s "
          f"({100 * floor / plain:.0f}%); the FLOP ceiling at the best shape's peak is {ceiling_s:.2f} s, "
          f"so even with zero non-matmul time a pass reaches at most {100 * ceiling_s / floor:.0f}% of the ceiling")


def compare_ce(model, sae, batch, bmask, autocast) -> None:
    """One official pass with the chunked per-token CE (probelab.sae.token_ce) against the same pass with
    F.cross_entropy on fp32-upcast logits, interleaved, best of 3 each."""
    import torch.nn.functional as F

    from probelab.sae import attribute
    from probelab.sae import attribution as attribution_module

    chunked = attribution_module.token_cross_entropy

    def upcast(logits, targets, ignore_index=-100):
        return F.cross_entropy(logits.float(), targets, reduction="none", ignore_index=ignore_index)

    times: dict[str, list[float]] = {"chunked": [], "F.cross_entropy": []}
    try:
        for _ in range(3):
            for name, fn in (("chunked", chunked), ("F.cross_entropy", upcast)):
                attribution_module.token_cross_entropy = fn
                t0 = time.perf_counter()
                attribute(model, sae, batch, bmask, "official", autocast=autocast, attention="eager")
                times[name].append(time.perf_counter() - t0)
    finally:
        attribution_module.token_cross_entropy = chunked
    a, b = min(times["chunked"]), min(times["F.cross_entropy"])
    print(f"one official pass ({'bf16' if autocast else 'fp32'}): chunked CE {a:.2f} s, F.cross_entropy on upcast "
          f"logits {b:.2f} s ({b / a:.2f}x)")


def matmul_floor(prof, dtype: torch.dtype) -> float:
    """Seconds the profiled pass's mm/addmm/bmm calls take when each shape is timed alone (best of 5)."""
    total = 0.0
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key not in ("aten::mm", "aten::addmm", "aten::bmm") or not e.input_shapes:
            continue
        shapes = [s for s in e.input_shapes if s]
        args = [torch.randn(*s).to(dtype) for s in shapes]
        op = {"aten::mm": torch.mm, "aten::bmm": torch.bmm,
              "aten::addmm": lambda b, x, w: torch.addmm(b, x, w)}[e.key]
        try:
            op(*args[:3])
        except RuntimeError:
            continue
        best = min(_timed(op, args[:3]) for _ in range(5))
        total += best * e.count
    return total


def _timed(op, args) -> float:
    t0 = time.perf_counter()
    op(*args)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
