"""erf, psi(z) = erf(z): the smooth activation of the statistical-physics teacher-student literature."""

import math

import torch

from . import Activation, register

TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

ERF = register(
    Activation(
        name="erf",
        forward=lambda z, slope: torch.erf(z),
        derivative=lambda z, slope: TWO_OVER_SQRT_PI * torch.exp(-z * z),
        backward=lambda g, z, slope: g.mul_(TWO_OVER_SQRT_PI * torch.exp(-z * z)),
        population_kernel="erf",
    )
)
