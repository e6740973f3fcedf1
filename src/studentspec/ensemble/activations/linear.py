"""Linear (identity) psi(z) = z: deep linear networks (the original code's linear option)."""

import torch

from . import Activation, register

LINEAR = register(Activation(
    name="linear",
    forward=lambda z, slope: z.clone(),  # a new tensor, as every other activation returns: callers may write into it
    derivative=lambda z, slope: torch.ones_like(z),
    backward=lambda g, z, slope: g,
    population_kernel="arccos",
    population_slope=lambda slope: 1.0,  # max(z, 1 z) = z: the Leaky ReLU closed form at a = 1 is sigma^2 u.w
    piecewise_linear=True,
))
