"""Per-seed batched matmuls whose result for one seed has the same bits whatever the ensemble size."""

from __future__ import annotations

import torch
from torch import Tensor

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def _pair(t: Tensor) -> Tensor:
    return t.expand(2, *t.shape[1:])


def bmm(a: Tensor, b: Tensor) -> Tensor:
    """torch.bmm whose result for one seed has the same bits whatever the ensemble size.

    A batch of one takes a different BLAS path than a larger batch, so a lone seed is
    computed as a (stride-0) batch of two. With MKL_CBWR set (see __init__), the batched
    path itself does not depend on a matrix's position in memory.
    """
    if a.shape[0] == 1:
        return torch.bmm(_pair(a), _pair(b))[:1]
    return torch.bmm(a, b)


def baddbmm(c: Tensor, a: Tensor, b: Tensor, alpha: float = 1.0) -> Tensor:
    """c + alpha * a @ b per seed (c broadcast over rows), ensemble-size independent like bmm."""
    if a.shape[0] == 1:
        return torch.baddbmm(_pair(c), _pair(a), _pair(b), alpha=alpha)[:1]
    return torch.baddbmm(c, a, b, alpha=alpha)
