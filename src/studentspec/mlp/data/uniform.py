"""data.kind uniform: x ~ U(-std sqrt3, std sqrt3)^d, the uniform law with the Gaussian kind's standard deviation."""

import math

import torch
from torch import Tensor

from . import DataKind, register


def uniform(g: torch.Generator, n: int, d: int, std: float, *, out: Tensor | None = None) -> Tensor:
    """n samples [n, d] float64, each coordinate uniform with standard deviation `std`, drawn into `out` when given."""
    return torch.rand(n, d, generator=g, dtype=torch.float64, out=out).mul_(2).sub_(1).mul_(std * math.sqrt(3.0))


UNIFORM = register(
    DataKind(
        name="uniform",
        draw=lambda g, n, cfg, *, w, b, training, out=None: uniform(g, n, cfg.input_dim, cfg.data.std, out=out),
    )
)
