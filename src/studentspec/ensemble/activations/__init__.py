"""The activation registry: psi, psi' and where each activation runs (compiled kernel, population loss).

An activation is one module here that calls `register(Activation(...))`, imported at the bottom of
this file; config validates `teacher.activation` against `names()`, so an unknown name is a config
error listing the known ones, never a silent default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ..registry import Registry


@dataclass(frozen=True)
class Activation:
    """One activation psi (`slope` is Leaky ReLU's a; the others ignore it)."""

    name: str
    forward: Callable[[Tensor, float], Tensor]  # psi(z)
    derivative: Callable[[Tensor, float], Tensor]  # psi'(z) (ReLU: psi'(0) = 0)
    backward: Callable[[Tensor, Tensor, float], Tensor]  # (g, z) -> g * psi'(z); may overwrite g
    # the compiled step's code for it: a constant of `enum ss_activation` in mlp/kernel/sgd_step.h, which gives its
    # value ("SS_ACT_RELU": max(z, 0), "SS_ACT_LEAKY_RELU": max(z, a z)); None: torch path only
    kernel: str | None = None
    population_kernel: str | None = None  # its closed-form population kernel (population.KERNELS); None: not supported
    # psi(z) = max(z, a z) with a = leaky_slope(teacher.leaky_slope): the form SS_ACT_LEAKY_RELU and "arccos" compute
    leaky_slope: Callable[[float], float] | None = None
    piecewise_linear: bool = False  # psi'' = 0 almost everywhere: what converge's Newton step and the theorem assume


ACTIVATIONS: Registry[Activation] = Registry("activation")
register = ACTIVATIONS.register
get = ACTIVATIONS.get
names = ACTIVATIONS.names


# each registers itself; this order is the order config errors list them in
from . import relu  # noqa: E402,F401,I001
from . import leaky_relu  # noqa: E402,F401
from . import linear  # noqa: E402,F401
from . import erf  # noqa: E402,F401
