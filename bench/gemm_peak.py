"""Measured matmul throughput of this CPU: the ceiling for any step whose cost is mostly matmuls.

    .venv/bin/python bench/gemm_peak.py

Times square-ish matmuls of the shapes a SmolLM2-135M step uses (1024 tokens x 576 / 1536 / 49152)
and reports the best GFLOP/s per dtype. bench/train_step.py and bench/attribution.py import
:func:`gemm_peak` to turn their FLOP counts into a throughput ceiling measured in the same run.
"""
from __future__ import annotations

import time

import torch

SHAPES = ((1024, 576, 1536), (1024, 1536, 576), (1024, 576, 576), (1024, 576, 49152))


def gemm_peak(dtype: torch.dtype = torch.bfloat16, repeats: int = 10) -> float:
    """Best GFLOP/s over :data:`SHAPES` with the current torch thread count."""
    best = 0.0
    g = torch.Generator().manual_seed(0)
    for m, k, n in SHAPES:
        a, b = torch.randn(m, k, generator=g).to(dtype), torch.randn(k, n, generator=g).to(dtype)
        for _ in range(3):
            a @ b
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * m * k * n * repeats / (time.perf_counter() - t0) / 1e9)
    return best



def cpu_attention_flops() -> dict:
    """``FlopCounterMode(custom_mapping=...)`` entries for the CPU SDPA kernels, which torch's counter
    does not know (without them SDPA attention counts as 0 FLOPs on CPU). Key/value heads are
    expanded to the query heads (grouped-query attention computes that much)."""
    import torch.utils.flop_counter as fc

    aten = torch.ops.aten

    def heads(q, kv):
        return (*kv[:1], q[1], *kv[2:])

    def fwd(query, key, value, *args, out_shape=None, **kwargs):
        return fc.sdpa_flop_count(query, heads(query, key), heads(query, value))

    def bwd(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return fc.sdpa_backward_flop_count(grad_out, query, heads(query, key), heads(query, value))

    return {aten._scaled_dot_product_flash_attention_for_cpu: fwd,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd}


if __name__ == "__main__":
    torch.set_num_threads(2)
    for dt in (torch.bfloat16, torch.float32):
        print(f"{str(dt):16s} {gemm_peak(dt):7.1f} GFLOP/s ({torch.get_num_threads()} threads)")
