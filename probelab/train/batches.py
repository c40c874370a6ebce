"""A deterministic data order that a checkpoint can resume exactly.

The order of training examples is a function of (seed, epoch): each epoch is a seeded
permutation. Optimizer step ``s`` uses global positions ``[s*G, (s+1)*G)`` of that endless
sequence (G = global batch), split into micro-batches and then across processes. A checkpoint
only needs the step number to put the data stream back where it was.
"""
from __future__ import annotations

import hashlib
import random


class BatchSchedule:
    def __init__(self, n_examples: int, micro_batch: int, grad_accum: int, world: int, seed: int):
        if n_examples < 1:
            raise ValueError("no training examples")
        self.n, self.micro, self.accum, self.world, self.seed = n_examples, micro_batch, grad_accum, world, seed
        self._perms: dict[int, list[int]] = {}

    @property
    def global_batch(self) -> int:
        return self.micro * self.accum * self.world

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            order = list(range(self.n))
            random.Random(f"data/{self.seed}/{epoch}").shuffle(order)
            self._perms = {epoch: order}  # keep one epoch in memory
        return self._perms[epoch]

    def step_indices(self, step: int) -> list[int]:
        """Example indices of optimizer step ``step`` (0-based), in global order."""
        start = step * self.global_batch
        return [self._perm(p // self.n)[p % self.n] for p in range(start, start + self.global_batch)]

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """The ``grad_accum`` micro-batches this process runs at ``step``.

        Micro-batch ``a`` of step ``s`` is the slice ``[a*micro*world, (a+1)*micro*world)`` of the
        step's indices; process ``r`` takes every ``world``-th element of it starting at ``r``.
        """
        idx = self.step_indices(step)
        span = self.micro * self.world
        return [idx[a * span:(a + 1) * span][rank::self.world] for a in range(self.accum)]

    def fingerprint(self, step: int) -> str:
        """A short hash of the step's example indices (logged, so a resume can be checked)."""
        return hashlib.sha1(",".join(map(str, self.step_indices(step))).encode()).hexdigest()[:12]
