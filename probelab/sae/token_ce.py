"""Per-token cross-entropy over a large vocabulary without full-size temporaries.

``F.cross_entropy(logits.float(), targets, reduction="none")`` on ``[N, V]`` logits (V = 49,152 for
SmolLM2) writes an fp32 copy of the logits, a full log-softmax, a zero-filled gradient for the NLL
and a full log-softmax gradient: five passes over ``N x V`` memory, most of a labelling pass's time
once the matmuls run in bf16. :func:`token_cross_entropy` computes the same loss and gradient from
the logits in row chunks: the forward keeps only the log-sum-exp per row, the backward writes
``(softmax - onehot) * grad`` straight into one gradient tensor of the logits' dtype. The maths is in
fp32 within each chunk, as with the upcast reference. Each pass reuses one fp32 chunk buffer, worked
on in place: a fresh multi-MiB tensor per chunk costs more in page faults than the arithmetic.
"""
from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 20  # fp32 elements of one chunk's buffer on a CPU (4 MiB, cache-sized): rows = this // vocab
GPU_CHUNK_ELEMENTS = 1 << 26  # on an accelerator (256 MiB): few kernel launches even for a 128k vocabulary


def _chunk_rows(logits: torch.Tensor) -> int:
    elements = CHUNK_ELEMENTS if logits.device.type == "cpu" else GPU_CHUNK_ELEMENTS
    return max(1, elements // logits.shape[1])


class _TokenCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        n, vocab = logits.shape
        rows = _chunk_rows(logits)
        buf = torch.empty(min(rows, n), vocab, dtype=torch.float32, device=logits.device)  # one, reused
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        for s in range(0, n, rows):
            b = buf[:min(rows, n - s)].copy_(logits[s:s + rows])
            top = b.amax(dim=-1, keepdim=True)
            lse[s:s + rows] = top.squeeze(1) + b.sub_(top).exp_().sum(dim=-1).log_()
        valid = targets != ignore_index
        safe = targets.masked_fill(~valid, 0)
        picked = logits.gather(1, safe[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, safe, valid, lse)
        ctx.rows = rows
        return torch.where(valid, lse - picked, torch.zeros((), dtype=torch.float32, device=logits.device))

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        logits, safe, valid, lse = ctx.saved_tensors
        n, vocab = logits.shape
        rows = ctx.rows
        g = torch.where(valid, grad_loss.float(), torch.zeros((), dtype=torch.float32, device=logits.device))
        onehot = valid.float()
        grad = torch.empty_like(logits)
        buf = torch.empty(min(rows, n), vocab, dtype=torch.float32, device=logits.device)
        for s in range(0, n, rows):
            e = min(s + rows, n)
            b = buf[:e - s].copy_(logits[s:e]).sub_(lse[s:e, None]).exp_()  # the chunk's softmax
            b.scatter_add_(1, safe[s:e, None], -onehot[s:e, None])  # minus the target's one-hot
            grad[s:e].copy_(b.mul_(g[s:e, None]))
        return grad, None, None


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """``-log softmax(logits)[target]`` per row, float32 ``[N]`` (0 where ``target == ignore_index``),
    differentiable in ``logits`` ``[N, V]`` (any float dtype; the gradient has the logits' dtype)."""
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"token_cross_entropy wants logits [N, V] and targets [N], got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    return _TokenCE.apply(logits, targets, ignore_index)
