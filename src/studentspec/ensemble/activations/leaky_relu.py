"""Leaky ReLU, psi(z) = max(z, a z) with a = teacher.leaky_slope in (0, 1)."""

import torch

from . import Activation, register

LEAKY_RELU = register(
    Activation(
        name="leaky_relu",
        forward=lambda z, slope: torch.nn.functional.leaky_relu(z, slope),
        derivative=lambda z, slope: torch.where(z > 0, torch.ones_like(z), torch.full_like(z, slope)),
        backward=lambda g, z, slope: torch.where(z > 0, g, g * slope),
        kernel="SS_ACT_LEAKY_RELU",
        population_kernel="arccos",
        leaky_slope=lambda slope: slope,
        piecewise_linear=True,
    )
)
