"""data.kind gaussian: x ~ N(0, std^2 I) for the training and evaluation sets (docs/model.md 4.1)."""

import torch
from torch import Tensor

from . import DataKind, register


def gaussian(g: torch.Generator, n: int, d: int, std: float, *, out: Tensor | None = None) -> Tensor:
    """n samples [n, d] float64 from N(0, std^2 I), drawn into `out` when given."""
    return torch.randn(n, d, generator=g, dtype=torch.float64, out=out).mul_(std)


GAUSSIAN = register(
    DataKind(
        name="gaussian",
        draw=lambda g, n, cfg, *, w, b, training, out=None: gaussian(g, n, cfg.input_dim, cfg.data.std, out=out),
    )
)
