"""SGD with momentum and L2 weight decay: torch.optim.SGD's update (dampening 0, no Nesterov) per seed."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torch.optim.sgd import sgd

from . import Hyper, OptimizerRule, register


class SGD:
    """torch.optim.sgd.sgd on the stacked tensors; the momentum buffers start as the first (decayed) gradient."""

    def __init__(self, params: list[Tensor], hyper: Hyper):
        self.params, self.hyper = params, hyper
        self.buf: list[Tensor | None] = [None] * len(params)  # filled by sgd() at the first step when momentum > 0

    def step(self, grads: Sequence[Tensor], lr: float) -> None:
        h = self.hyper
        sgd(
            self.params,
            list(grads),
            self.buf,
            foreach=False,
            fused=False,
            weight_decay=h.weight_decay,
            momentum=h.momentum,
            lr=lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )

    def state(self) -> list[Tensor]:
        return [b for b in self.buf if b is not None]


register(OptimizerRule("sgd", SGD, "minibatch SGD: momentum, L2 weight decay (torch.optim.SGD)", plain_sgd=True))
