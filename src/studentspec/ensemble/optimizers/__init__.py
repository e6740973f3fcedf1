"""The optimizer registry: the update rule behind `train.optimizer` (and the conv teacher's SGD).

An optimizer is one module here that calls `register(OptimizerRule(...))`, imported at the bottom of
this file; config validates `train.optimizer` against `names()`, so an unknown name is a config error
listing the known ones. Whether a rule steps on the whole training set (gd) is its `full_batch` attribute,
read through `full_batch(name)` only: the data stream, steps_per_epoch's sample count, the cost estimate
and the pipelines' checks all ask it, never the name. `ensemble.optim.Optimizer` is the one object trainers hold: it
looks the rule up here by name; its `frozen` restores a dead seed's parameters and the tensors `state()` lists.

Every registered rule is torch.optim's own update function (torch.optim.sgd.sgd, torch.optim.adam.adam:
the code torch.optim.SGD.step / Adam.step run) applied to the ensemble's stacked tensors [S, ...], never fused
(SGD single-tensor, Adam foreach: see adam.py), with the state held here as plain per-parameter lists.
No hand-written update rule is left. Measured with benchmarks/optim_bitwise.py (torch 2.13, CPU AVX512,
float64 and float32, 50 steps with a changing lr, parameters of odd sizes, S=1 vs S=8):

- single-tensor and foreach torch.optim.SGD (momentum 0 / 0.9, weight decay 0 / 5e-4) and Adam (weight
  decay 0 / 5e-4): seed s alone is bit-identical to seed s inside the ensemble; every op is elementwise.
- SGD: bit-identical to the hand-written rule studentspec had before (p.sub_(g, alpha=lr) vs torch's
  p.add_(g, alpha=-lr); the same weight decay and momentum ops), so stored SGD / GD numbers do not change.
- Adam: NOT bit-identical to the former hand rule, which rounded sqrt(v / bc2) where torch rounds
  sqrt(v) / sqrt(bc2). Adam runs' bits change with this registry (last digits; seed alone == in ensemble
  still holds), and they now equal a per-seed torch.optim.Adam on a plain nn.Module bit for bit.
- fused=True (CPU kernels) breaks seed alone == in ensemble for SGD with momentum and for Adam (its
  vectorized body and scalar tail round differently, so a seed's bits depend on where its slice falls):
  never used. foreach=True gives the same bits as foreach=False (SGD and Adam, both dtypes); SGD keeps the
  single-tensor path (foreach is no faster for it), Adam takes foreach (about twice as fast on large tensors).
- The functional call instead of the torch.optim classes: the same code and bits, but a class's step costs
  ~70 us more per call (its profiler and torch._dynamo graph-break wrapper, ~90 vs ~19 us on a small MLP's
  three tensors) and imports torch._dynamo (seconds) at the first step; the MLP trainer steps ~1e5 times.
Not measured on CUDA (no device was available); the ops there are the same elementwise kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from ..registry import Registry


@dataclass(frozen=True)
class Hyper:
    """Hyperparameters every rule is built with (each reads the ones it uses)."""

    momentum: float = 0.0
    weight_decay: float = 0.0  # L2: added to the gradient (torch.optim's weight_decay)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


class Stepper(Protocol):
    """A rule bound to its parameters, holding its state."""

    def step(self, grads: Sequence[Tensor], lr: float) -> None:
        """Update the parameters in place (called under torch.no_grad)."""

    def state(self) -> list[Tensor]:
        """Every per-seed state tensor (shaped like its parameter, seed axis first) that exists so far."""


@dataclass(frozen=True)
class OptimizerRule:
    """One optimizer: `make(params, hyper)` binds it to a list of [S, ...] tensors."""

    name: str
    make: Callable[[list[Tensor], Hyper], Stepper]
    summary: str = ""
    full_batch: bool = False  # every step takes the whole training set (no batches, no sampling)
    # with momentum and weight decay 0 the update is W -= lr * dW: what the compiled step and the fused backward run
    plain_sgd: bool = False


OPTIMIZERS: Registry[OptimizerRule] = Registry("optimizer")
register = OPTIMIZERS.register
get = OPTIMIZERS.get
names = OPTIMIZERS.names


def full_batch(name: str) -> bool:
    """Whether the optimizer `name` steps on the whole training set: the one place this is read."""
    return get(name).full_batch


def plain_sgd(name: str, momentum: float, weight_decay: float) -> bool:
    """Whether these settings make the update W -= lr * dW (the compiled step's and the fused backward's rule)."""
    return get(name).plain_sgd and not momentum and not weight_decay


# each registers itself; this order is the order config errors list them in
from . import sgd  # noqa: E402,F401,I001
from . import gd  # noqa: E402,F401
from . import adam  # noqa: E402,F401
