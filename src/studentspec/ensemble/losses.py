"""The training objectives (docs/model.md section 1), one definition each, used by every loss and gradient.

With d = f(x) - f*(x) per sample (C outputs) and a batch of B samples:

- ``half_sse``: 1/2 sum_c d_c^2 per sample, mean over the batch: the paper's J and the original
  two-layer code (update W <- W + lr/B sum_b h~ (y* - y)^T). Gradient per sample d.
- ``mse``: mean over the batch AND the C outputs (PyTorch's MSELoss, the original deep code):
  (2/C) J, gradient per sample (2/C) d.
- ``ce``: cross-entropy against the teacher's argmax, mean over the batch.

The compiled kernel (mlp/kernel/sgd_step_impl.h, loss_and_grad) implements the same three as the
constants of sgd_step.h's `enum ss_objective` named in KERNEL_ENUMS; tests/test_losses.py pins both
paths to the update equations in NumPy.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOSSES = ("half_sse", "mse", "ce")
# each objective's constant in the compiled step's header (mlp/kernel/sgd_step.h), which gives its value
KERNEL_ENUMS = {"half_sse": "SS_HALF_SSE", "mse": "SS_MSE", "ce": "SS_CE"}


def check(kind: str) -> None:
    """Raise ValueError naming the known objectives unless `kind` is one."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r} (one of {', '.join(LOSSES)})")


def j_scale(kind: str, outputs: int) -> float | None:
    """The objective as a multiple of J = 1/2 ||f* - f||^2 (None for cross-entropy, not a multiple of J)."""
    check(kind)
    return {"half_sse": 1.0, "mse": 2.0 / outputs, "ce": None}[kind]


def per_seed_loss(out: Tensor, target: Tensor, kind: str) -> Tensor:
    """The objective of each ensemble member on a batch, [S], from outputs and teacher outputs [S, B, C]."""
    check(kind)
    if kind == "half_sse":
        return (out - target).square().sum(dim=(1, 2)).mul_(0.5 / out.shape[1])
    if kind == "mse":
        return (out - target).square().mean(dim=(1, 2))
    S, B, C = out.shape
    labels = target.argmax(dim=2).reshape(-1)
    ce = torch.nn.functional.cross_entropy(out.reshape(S * B, C), labels, reduction="none")
    return ce.view(S, B).mean(dim=1)


def output_grad(out: Tensor, target: Tensor, kind: str) -> tuple[Tensor, Tensor]:
    """Per-seed objective [S] and its gradient d objective / d out [S, B, C] on a batch."""
    check(kind)
    S, B, C = out.shape
    if kind == "ce":
        loss, grad = _ce(out, target)
        return loss.mean(dim=1), grad.div_(B)
    diff = out - target
    if kind == "half_sse":
        return diff.square().sum(dim=(1, 2)).mul_(0.5 / B), diff.mul_(1.0 / B)
    return diff.square().mean(dim=(1, 2)), diff.mul_(2.0 / (B * C))


def sample_grad(out: Tensor, target: Tensor, kind: str) -> Tensor:
    """Each sample's own gradient d loss(x) / d out, [S, N, C] (output_grad's without the batch mean's 1/B)."""
    check(kind)
    if kind == "ce":
        return _ce(out, target)[1]
    diff = out - target
    return diff if kind == "half_sse" else diff.mul_(2.0 / out.shape[2])


def _ce(out: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample cross-entropy to the teacher's argmax [S, B] and its gradient softmax - onehot [S, B, C]."""
    logp = torch.log_softmax(out, dim=2)
    labels = target.argmax(dim=2, keepdim=True)
    loss = -logp.gather(2, labels).squeeze(2)
    grad = logp.exp_()
    grad.scatter_add_(2, labels, torch.full_like(labels, -1, dtype=grad.dtype))
    return loss, grad
