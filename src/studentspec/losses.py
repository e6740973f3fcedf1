"""Per-seed training losses: MSE to the teacher's outputs, or cross-entropy to its argmax."""

from __future__ import annotations

import torch
from torch import Tensor


def per_seed_loss(out: Tensor, target: Tensor, kind: str) -> Tensor:
    """Loss of each ensemble member, [S]: mean over samples (and outputs, for MSE)."""
    if kind == "mse":
        return (out - target).square().mean(dim=(1, 2))
    S, B, C = out.shape
    labels = target.argmax(dim=2).reshape(-1)
    ce = torch.nn.functional.cross_entropy(out.reshape(S * B, C), labels, reduction="none")
    return ce.view(S, B).mean(dim=1)
