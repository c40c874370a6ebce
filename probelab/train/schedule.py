"""The learning-rate schedule of both training loops, from torch's own schedulers.

Linear warmup over ``train.warmup`` steps (step ``s`` < warmup trains with ``lr * (s + 1) / warmup``),
then a half cosine from ``lr`` down to ``lr * min_lr_ratio`` at ``train.steps``: torch's ``LinearLR``
followed by ``CosineAnnealingLR``, chained by ``SequentialLR``. These are the values the loops
computed by hand before (tests/test_training_stack.py compares them to 1e-9).

The scheduler is stepped once after every optimizer step. It is a pure function of the config and
the step, so resuming rebuilds it from the (possibly longer) ``train.steps`` and advances it to the
checkpoint's step instead of storing its state.
"""
from __future__ import annotations

import warnings

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def make_scheduler(optimizer: torch.optim.Optimizer, t, start_step: int = 0) -> LRScheduler:
    """The schedule for ``t`` (an :class:`~probelab.train.config.OptimCfg`), positioned at ``start_step``
    (the learning rate of the next optimizer step is then ``optimizer.param_groups[i]["lr"]``)."""
    for g in optimizer.param_groups:  # a restored checkpoint left the last step's lr in the groups
        g["lr"] = g["initial_lr"] = t.lr
    decay = max(1, t.steps - t.warmup)
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended when fast-forwarding
        warnings.simplefilter("ignore", UserWarning)
        if t.warmup == 0:
            sched = CosineAnnealingLR(optimizer, T_max=decay, eta_min=t.lr * t.min_lr_ratio)
        else:
            warm = LinearLR(optimizer, start_factor=1.0 / t.warmup, end_factor=1.0, total_iters=max(t.warmup - 1, 1))
            cosine = CosineAnnealingLR(optimizer, T_max=decay, eta_min=t.lr * t.min_lr_ratio)
            sched = SequentialLR(optimizer, [warm, cosine], milestones=[t.warmup])
        for _ in range(start_step):
            sched.step()
    return sched


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
