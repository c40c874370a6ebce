"""CPU attention, forward + backward: PyTorch's fused SDPA kernel vs eager (matmul, softmax, matmul).

    .venv/bin/python bench/attention_cpu.py [--batch 4 --tokens 128]

The shape is SmolLM2-135M's (9 query heads, 3 key/value heads, head size 64), causal, in bf16
(``--dtype float32`` for fp32 training) with 2 threads: one attention of a training step. The
eager path is what transformers' ``eager`` attention computes (GQA by repeating keys and values, an additive causal mask, an fp32 softmax).
probelab.models.attention.auto_attention picks eager on CPU from these numbers; the memory it costs
is the softmax kept per layer, printed last.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def sdpa(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def eager(q, k, v, mask):
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + mask
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v


def timed(fn, q, k, v, mask, repeats: int) -> tuple[float, float]:
    """Best forward and backward milliseconds over ``repeats`` calls."""
    fwd, bwd = [], []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        out = fn(q, k, v, mask)
        t1 = time.perf_counter()
        out.sum().backward()
        t2 = time.perf_counter()
        if i >= 3:  # warm-up
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    return 1e3 * min(fwd), 1e3 * min(bwd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    b, t, d = args.batch, args.tokens, args.head_dim
    dt = getattr(torch, args.dtype)
    q = torch.randn(b, args.heads, t, d, generator=g).to(dt).requires_grad_()
    k, v = (torch.randn(b, args.kv_heads, t, d, generator=g).to(dt).requires_grad_() for _ in range(2))
    mask = torch.full((t, t), float("-inf")).triu(1).to(dt)
    with torch.no_grad():
        diff = (sdpa(q, k, v, mask).float() - eager(q, k, v, mask).float()).abs().max().item()
    print(f"batch {b} x {t} tokens, {args.heads}/{args.kv_heads} heads x {d}, {args.dtype}, {args.threads} threads, "
          f"best of {args.repeats}; max |sdpa - eager| = {diff:.1e}")
    res = {}
    for name, fn in (("sdpa", sdpa), ("eager", eager)):
        res[name] = timed(fn, q, k, v, mask, args.repeats)
        print(f"{name:<6} forward {res[name][0]:6.2f} ms   backward {res[name][1]:6.2f} ms   "
              f"total {sum(res[name]):6.2f} ms")
    print(f"sdpa / eager: forward {res['sdpa'][0] / res['eager'][0]:.2f}x, backward "
          f"{res['sdpa'][1] / res['eager'][1]:.2f}x, total {sum(res['sdpa']) / sum(res['eager']):.2f}x")
    print(f"eager keeps {b * args.heads * t * t * 6 / 2**20:.1f} MiB of softmax per layer for the backward")


if __name__ == "__main__":
    main()
