"""Adam with L2 weight decay (added to the gradient, not AdamW's decoupled decay): torch.optim.Adam's update per seed.

Bits: equal to a per-seed torch.optim.Adam; not to studentspec's former hand-written Adam (see the package docstring).
The foreach path (torch's _multi_tensor_adam): measured bit-identical to the single-tensor path (what a per-seed
torch.optim.Adam runs on CPU by default; the tests check against it) and about twice as fast on large CPU tensors,
because it takes the square root of the second moment and divides it by sqrt(bc2) in one buffer where the
single-tensor path allocates two (S=8, 500x784 float64 MLP: ~40 vs ~80 ms per step on this machine, the former
hand rule ~25-50 ms).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.optim.adam import adam

from . import Hyper, OptimizerRule, register


class Adam:
    """torch.optim.adam.adam on the stacked tensors: first and second moments per element, one step count per tensor."""

    def __init__(self, params: list[Tensor], hyper: Hyper):
        self.params, self.hyper = params, hyper
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        # shared by the seeds (as the hand rule's t was): a frozen seed's count runs on, but it never steps again.
        # float64 on the CPU: exact; torch.optim.Adam's float32 count gives the same bias corrections (below 2**24 steps
        # exactly, above it both corrections are 1.0 to double precision)
        self.steps = [torch.zeros((), dtype=torch.float64) for _ in params]

    def step(self, grads: Sequence[Tensor], lr: float) -> None:
        h = self.hyper
        adam(
            self.params,
            list(grads),
            self.exp_avg,
            self.exp_avg_sq,
            [],
            self.steps,
            foreach=True,
            fused=False,
            amsgrad=False,
            beta1=h.betas[0],
            beta2=h.betas[1],
            lr=lr,
            weight_decay=h.weight_decay,
            eps=h.eps,
            maximize=False,
        )

    def state(self) -> list[Tensor]:
        return [*self.exp_avg, *self.exp_avg_sq]


register(OptimizerRule("adam", Adam, "Adam with L2 weight decay (torch.optim.Adam)"))
