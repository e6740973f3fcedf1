"""ReLU, psi(z) = max(z, 0): the paper's activation."""

import torch

from . import Activation, register

RELU = register(
    Activation(
        name="relu",
        forward=lambda z, slope: torch.relu(z),
        derivative=lambda z, slope: torch.where(z > 0, torch.ones_like(z), torch.zeros_like(z)),
        backward=lambda g, z, slope: g.mul_(z > 0),
        kernel="SS_ACT_RELU",
        population_kernel="arccos",
        leaky_slope=lambda slope: 0.0,
        piecewise_linear=True,
    )
)
