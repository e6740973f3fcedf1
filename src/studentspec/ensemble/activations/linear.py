"""Linear (identity) psi(z) = z: deep linear networks (the original code's linear option)."""

import torch

from . import Activation, register

LINEAR = register(
    Activation(
        name="linear",
        forward=lambda z, slope: (
            z.clone()
        ),  # a new tensor, as every other activation returns: callers may write into it
        derivative=lambda z, slope: torch.ones_like(z),
        backward=lambda g, z, slope: g,
        # Leaky ReLU's code at a = 1: v > 0 ? v : 1.0 * v is v exactly, forward and backward
        kernel="SS_ACT_LEAKY_RELU",
        population_kernel="arccos",
        leaky_slope=lambda slope: (
            1.0
        ),  # max(z, 1 z) = z: Leaky ReLU at a = 1 (its population closed form is sigma^2 u.w)
        piecewise_linear=True,
    )
)
