"""Batched optimizers over ensemble tensors (PyTorch update rules, one state per seed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor


class Optimizer:
    """SGD (momentum, L2 weight decay; also full-batch GD) or Adam over a list of tensors.

    The update rules match torch.optim.SGD / torch.optim.Adam applied to each seed separately.
    """

    def __init__(self, params: list[Tensor], kind: str, momentum: float = 0.0, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.kind = params, kind
        self.momentum, self.weight_decay = momentum, weight_decay
        self.betas, self.eps = betas, eps
        self.t = 0
        self.buf: list[Tensor | None] = [None] * len(params)
        self.sq: list[Tensor | None] = [None] * len(params)

    @torch.no_grad()
    def step(self, grads: list[Tensor] | tuple[Tensor, ...], lr: float) -> None:
        """Apply one update with learning rate lr."""
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if self.weight_decay:
                g = g.add(p, alpha=self.weight_decay)
            if self.kind == "adam":
                self._adam(i, p, g, lr)
                continue
            if self.momentum:
                buf = self.buf[i]
                if buf is None:
                    self.buf[i] = buf = g.clone()
                else:
                    buf.mul_(self.momentum).add_(g)
                g = buf
            p.sub_(g, alpha=lr)

    def _adam(self, i: int, p: Tensor, g: Tensor, lr: float) -> None:
        b1, b2 = self.betas
        if self.buf[i] is None:
            self.buf[i], self.sq[i] = torch.zeros_like(p), torch.zeros_like(p)
        m, v = self.buf[i], self.sq[i]
        assert m is not None and v is not None
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
        p.addcdiv_(m, denom, value=-lr / (1 - b1**self.t))

    def state(self) -> list[Tensor]:
        """Every state tensor (to freeze diverged seeds alongside the parameters)."""
        return [t for t in (*self.buf, *self.sq) if t is not None]


def seed_mask(mask: Tensor, like: Tensor) -> Tensor:
    """A per-seed mask [S] shaped to broadcast against `like` [S, ...]."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


@contextmanager
def frozen(alive: Tensor, opt: Optimizer) -> Iterator[None]:
    """Run an update, then put every dead seed's parameters and optimizer state back: the one divergence freeze."""
    tensors = opt.params + opt.state()
    saved = [t.detach().clone() for t in tensors]
    yield
    with torch.no_grad():
        for t, old in zip(tensors, saved):
            t.copy_(torch.where(seed_mask(alive, t), t, old))
