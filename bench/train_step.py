"""One training step on the embedded SmolLM2-135M: Control LLM vs full vs partial fine-tune (CPU).

Every method runs in a fresh subprocess (so memory numbers do not leak between methods) with
the same batch, AdamW, bf16 autocast and attention (``--attn auto``: the training script's choice,
eager on CPU in bf16 at these sizes, SDPA for the fp32 run; bench/attention_cpu.py):

- ``control``   — concat expansion, 6 Lerp layers (base blocks 4, 9, ..., 29), MSE divergence, alpha 1;
- ``partial``   — the same 6 base blocks trainable, everything else frozen;
- ``full``      — every parameter trainable (bf16 autocast, like the others);
- ``full-fp32`` — full fine-tune without autocast (the plain reference number), unless --no-fp32;
- ``control-bf16`` / ``partial-bf16`` — as above with the frozen linear weights stored in bf16
  (``probelab.models.control.frozen.store_frozen_linears``: identical results under bf16 autocast,
  no fp32 master copy of weights that never change).

Tokens/s is measured over ``--steps`` steps after ``--warmup`` steps, in ``--rounds`` rounds that
interleave the methods; the best round per method is kept (a shared CPU only ever makes a run
slower, so the best round is the least disturbed one). Peak memory is the process's
peak resident set (VmHWM, reset with /proc/self/clear_refs after warm-up and after freed heap pages
are returned to the OS with malloc_trim) during those steps, so it
includes weights, gradients, optimizer state and activations. Ratios are printed against the
issue's targets: control >= 3x full tok/s, >= 0.8x partial tok/s, peak memory <= 0.6x full.

Every method computes its CE with ``--loss`` (default ``chunked``: :mod:`probelab.train.lm_loss`,
the training script's ``train.loss_chunk``; ``hf``: the model's own loss over full logits) and the
attention ``--attn`` (auto, sdpa or eager). After the timed steps one more step runs under
``torch.utils.flop_counter.FlopCounterMode``: GFLOP/step (matmuls and attention, forward and
backward; the CPU SDPA kernels are added through ``gemm_peak.cpu_attention_flops``) and the
GFLOP/s each method reached; FLOPs full / control is the speed-up that equal matmul efficiency
would give. A last step runs under ``torch.profiler``: ``matmul s`` is the time spent inside
matmul kernels (mm / bmm / addmm), so ``s/step - matmul s`` is everything else (norms, rotary,
softmax, SiLU, casts, the CE's softmax over the vocabulary, AdamW).

    flock /tmp/probelab-heavy.lock .venv/bin/python bench/train_step.py
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

METHODS = ("control", "control-bf16", "partial", "partial-bf16", "full", "full-fp32")
MATMUL_OPS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"}


def _status_mb(key: str) -> float:
    text = open("/proc/self/status").read()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) / 1024


def _release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc), so RSS shows live memory, e.g. after a dtype change."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def build(method: str, model_name: str, num_expanded: int, attn: str = "auto", batch: int = 4, seq: int = 128,
          dtype=None, device: str = "cpu"):
    import torch

    from probelab.capture import decoder_layers
    from probelab.models import load_model
    from probelab.models.attention import choose_attention, switch_attention
    from probelab.models.control import expand_model, expanded_layer_indices

    model, _ = load_model(model_name, device=device, dtype="float32")
    # auto: what training/train_csft.py's train.attention=auto picks
    attn = choose_attention(attn, model, device, batch, seq, dtype or torch.bfloat16, extra_layers=num_expanded)
    switch_attention(model, attn or "sdpa")
    layers = decoder_layers(model)
    chosen = expanded_layer_indices(len(layers), num_expanded)
    if method.startswith("control"):
        model = expand_model(model, num_expanded=num_expanded, interpolation="lerp", divergence="mse", alpha=1.0)
    elif method.startswith("partial"):
        model.requires_grad_(False)
        for i in chosen:
            layers[i].requires_grad_(True)
    else:
        model.requires_grad_(True)
    if method.endswith("-bf16"):
        from probelab.models.control.frozen import store_frozen_linears

        store_frozen_linears(model, torch.bfloat16)
    return model.train(), torch


def worker(args) -> dict:
    import torch

    from probelab.train.lm_loss import causal_lm_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, _ = build(args.worker, args.model, args.num_expanded, args.attn, args.batch, args.seq,
                     torch.float32 if args.worker == "full-fp32" else torch.bfloat16, args.device)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=g).to(dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.worker != "full-fp32")
    _release_freed_memory()
    rss_model = _status_mb("VmRSS")

    def step():
        with autocast:
            # chunked: CE from the final hidden states, no [tokens, vocab] logits kept
            out, ce = causal_lm_loss(model, {"input_ids": ids, "labels": ids}, 128 if args.loss == "chunked" else 0)
        loss = ce + getattr(out, "divergence_loss", 0.0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    for _ in range(args.warmup):
        step()
    _release_freed_memory()
    _reset_peak()
    if cuda:  # on a GPU, peak memory is the device's allocator peak (weights, grads, optimizer, activations)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize(dev)
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else _status_mb("VmHWM")
    from torch.utils.flop_counter import FlopCounterMode

    from gemm_peak import cpu_attention_flops

    # matmul and attention FLOPs of one step, forward + backward
    with FlopCounterMode(display=False, custom_mapping=cpu_attention_flops()) as flops:
        step()
    # the time one step spends inside matmul kernels (the rest: norms, rotary, softmax, casts, AdamW)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        step()
    if cuda:  # kernel time on the device
        matmul_us = sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages() if e.key in MATMUL_OPS)
    else:
        matmul_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS)
    return {"gflop": flops.get_total_flops() / 1e9, "matmul_s": matmul_us / 1e6,
            "method": args.worker, "tok_s": args.batch * args.seq * args.steps / elapsed,
            "s_per_step": elapsed / args.steps, "peak_mb": peak, "model_rss_mb": rss_model,
            "trainable": sum(p.numel() for p in params), "total": sum(p.numel() for p in model.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-expanded", type=int, default=6, help="expanded (and partially trained) layers")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best per method is kept")
    ap.add_argument("--attn", default="auto", choices=("auto", "sdpa", "eager"),
                    help="attention implementation (all methods); auto: the training script's CPU choice")
    ap.add_argument("--loss", default="chunked", choices=("hf", "chunked"),
                    help="hf: the model's loss from full logits; chunked: probelab.train.lm_loss (all methods)")
    ap.add_argument("--no-fp32", action="store_true", help="skip the fp32 full fine-tune")
    ap.add_argument("--methods", default=None, help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (on a GPU: peak MB = CUDA allocator peak)")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return

    methods = args.methods.split(",") if args.methods else [m for m in METHODS if not (args.no_fp32 and m == "full-fp32")]
    results = {}
    passthrough = ["--model", args.model, "--batch", str(args.batch), "--seq", str(args.seq), "--steps",
                   str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
                   "--num-expanded", str(args.num_expanded), "--attn", args.attn, "--loss", args.loss,
                   "--device", args.device]
    for r in range(args.rounds):
        for m in methods:
            print(f"round {r + 1}/{args.rounds}: {m} ...", file=sys.stderr, flush=True)
            proc = subprocess.run([sys.executable, __file__, "--worker", m, *passthrough], capture_output=True,
                                  text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.exit(f"{m} failed:\n{proc.stderr[-2000:]}")
            res = json.loads(line[len("RESULT "):])
            print(f"  {res['tok_s']:.1f} tok/s, peak {res['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
            best = results.get(m)
            if best is None or res["tok_s"] > best["tok_s"]:
                res["peak_mb"] = max(res["peak_mb"], best["peak_mb"]) if best else res["peak_mb"]
                results[m] = res
            else:
                best["peak_mb"] = max(best["peak_mb"], res["peak_mb"])

    import torch

    from gemm_peak import gemm_peak

    torch.set_num_threads(args.threads)
    peak = gemm_peak(torch.bfloat16) if args.device == "cpu" else float("nan")  # the CPU's peak only
    print(f"\n{args.model}, batch {args.batch}x{args.seq}, {args.steps} steps after {args.warmup} warm-up, "
          f"{args.threads} threads, AdamW, bf16 autocast (except full-fp32), best of {args.rounds} rounds\n")
    print(f"{'method':<13} {'tok/s':>8} {'s/step':>8} {'peak MB':>9} {'model MB':>9} {'trainable':>12} "
          f"{'GFLOP/step':>11} {'GFLOP/s':>8} {'matmul s':>9}")
    for m, r in results.items():
        print(f"{m:<13} {r['tok_s']:8.1f} {r['s_per_step']:8.2f} {r['peak_mb']:9.0f} {r['model_rss_mb']:9.0f} "
              f"{r['trainable']:>12,} {r['gflop']:11.1f} {r['gflop'] / r['s_per_step']:8.1f} {r['matmul_s']:9.2f}")
    for ctl, part in (("control", "partial"), ("control-bf16", "partial-bf16")):
        if ctl not in results:
            continue
        c = results[ctl]
        print()
        checks = []
        for ref, target in (("full", 3.0), ("full-fp32", 3.0), (part, 0.8)):
            if ref in results:
                ratio = c["tok_s"] / results[ref]["tok_s"]
                checks.append((f"tok/s {ctl} / {ref}", ratio, f">= {target}", ratio >= target))
        for ref in ("full", "full-fp32"):
            if ref in results:
                ratio = c["peak_mb"] / results[ref]["peak_mb"]
                checks.append((f"peak mem {ctl} / {ref}", ratio, "<= 0.6", ratio <= 0.6))
        for name, ratio, target, ok in checks:
            print(f"{name:<34} {ratio:6.2f}x  target {target:<7} {'met' if ok else 'MISSED'}")
        if "full" in results:  # what equal matmul efficiency would give: the FLOP ratio
            print(f"{'FLOPs full / ' + ctl:<34} {results['full']['gflop'] / c['gflop']:6.2f}x  "
                  f"(the tok/s ratio if both ran at the same GFLOP/s)")
            need = 3.0 * results["full"]["tok_s"] / c["tok_s"] * c["gflop"] / c["s_per_step"]
            print(f"{'3x full would need ' + ctl + ' at':<34} {need:6.0f} GFLOP/s = {100 * need / peak:.0f}% of "
                  f"the bf16 matmul peak ({peak:.0f} GFLOP/s, bench/gemm_peak.py)")
            budget = results["full"]["s_per_step"] / 3
            other = c["s_per_step"] - c["matmul_s"]
            print(f"{'3x full means ' + ctl + ' steps of':<34} {budget:6.2f} s; its matmul kernels alone take "
                  f"{c['matmul_s']:.2f} s (profiled), the rest {other:.2f} s would have to fit in "
                  f"{budget - c['matmul_s']:.2f} s")


if __name__ == "__main__":
    main()
