"""The trainers' optimizer over ensemble tensors (one state per seed) and the divergence freeze.

The update rules live in the registry `ensemble.optimizers` (one module per optimizer: torch.optim's own
update functions on the stacked [S, ...] tensors; its docstring gives the measured reasons). `Optimizer`
binds a registered rule to a parameter list; `frozen` is the one divergence freeze of the MLP and conv trainers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from . import optimizers


class Optimizer:
    """The registered optimizer `kind` (sgd, gd, adam, ...) over a list of [S, ...] tensors, updated in place.

    Each seed's update equals the torch.optim optimizer applied to that seed alone, bit for bit.
    An unknown `kind` raises KeyError naming the registered ones.
    """

    def __init__(
        self,
        params: list[Tensor],
        kind: str,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.params, self.kind = params, kind
        self.rule = optimizers.get(kind).make(
            params, optimizers.Hyper(momentum, weight_decay, (betas[0], betas[1]), eps)
        )

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor], lr: float) -> None:
        """Apply one update with learning rate lr (a schedule passes each epoch's lr here)."""
        self.rule.step(grads, lr)

    def state(self) -> list[Tensor]:
        """Every per-seed state tensor (to freeze diverged seeds alongside the parameters)."""
        return self.rule.state()

    def state_dict(self) -> dict[str, list[Tensor | None]]:
        """The rule's state lists by attribute name (momentum
        buffers, moments, step counts): what a checkpoint saves."""
        return {k: list(v) for k, v in vars(self.rule).items() if k not in ("params", "hyper") and isinstance(v, list)}

    @torch.no_grad()
    def load_state_dict(self, saved: dict[str, list[Tensor | None]]) -> None:
        """Put a state_dict() back (in place where a tensor exists, so bound buffers stay valid)."""
        for name, values in saved.items():
            current = getattr(self.rule, name)
            if len(values) != len(current):
                raise ValueError(f"optimizer state {name!r} holds {len(values)} tensors, this optimizer {len(current)}")
            for i, v in enumerate(values):
                if v is None or current[i] is None:
                    current[i] = None if v is None else v.to(self.params[min(i, len(self.params) - 1)].device).clone()
                else:
                    current[i].copy_(v)


def seed_mask(mask: Tensor, like: Tensor) -> Tensor:
    """A per-seed mask [S] shaped to broadcast against `like` [S, ...]."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


@contextmanager
def frozen(alive: Tensor, opt: Optimizer) -> Iterator[None]:
    """Run an update, then put every dead seed's parameters and optimizer state back: the one divergence freeze.

    State a rule creates during this very update (momentum buffers at the first step) has nothing to go back to;
    a seed is only ever frozen for good, so its state never feeds another update.
    """
    tensors = opt.params + opt.state()
    saved = [t.detach().clone() for t in tensors]
    yield
    with torch.no_grad():
        for t, old in zip(tensors, saved):
            t.copy_(torch.where(seed_mask(alive, t), t, old))
