"""Hand-derived batched backward pass for plain MLP ensembles (no BatchNorm): the fast path.

With g_L = dLoss/df, each layer's gradient is dW_l = h_{l-1}^T g_l, db_l = sum_b g_l and the
signal below is g_{l-1} = (g_l W_l^T) * psi'(z_{l-1}). Autograd gives the same numbers
(tests/test_nets.py); this path skips its graph bookkeeping, which dominates small steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ensemble import activations
from ..ensemble.batched import baddbmm, bmm
from ..ensemble.losses import output_grad
from .nets import Net


def supports(net: Net) -> bool:
    """Whether the hand-derived backward applies (no BatchNorm): one of the rules mlp.train.choose_steps applies."""
    return net.batchnorm == "none"


def backward(net: Net, hs: list[Tensor], zs: list[Tensor], g: Tensor, *, sgd_lr: float | None = None) -> list[Tensor]:
    """Gradients [dW_1, db_1, ..., dW_L, db_L] from the output signal g, given Net.trace()'s inputs (hs) and
    pre-activations (zs).

    With `sgd_lr`, each layer is instead updated in place (W -= lr dW, fused into the GEMM) as
    soon as its signal has been passed down, and nothing is returned.
    """
    act = activations.get(net.activation)
    depth = len(net.weights)
    grads: list[Tensor] = [torch.empty(0)] * (2 * depth)
    for l in range(depth - 1, -1, -1):
        below = bmm(g, net.weights[l].transpose(1, 2)) if l > 0 else None
        if sgd_lr is None:
            grads[2 * l] = bmm(hs[l].transpose(1, 2), g)
            grads[2 * l + 1] = g.sum(dim=1)
        else:
            if g.shape[0] > 1:
                net.weights[l].baddbmm_(hs[l].transpose(1, 2), g, alpha=-sgd_lr)
            else:
                net.weights[l].copy_(baddbmm(net.weights[l], hs[l].transpose(1, 2), g, alpha=-sgd_lr))
            net.biases[l].sub_(g.sum(dim=1), alpha=sgd_lr)
        if below is not None:
            z = zs[l - 1]
            g = act.backward(below, z, net.slope)
    return [] if sgd_lr is not None else grads


def loss_and_grads(net: Net, x: Tensor, target: Tensor, kind: str) -> tuple[Tensor, list[Tensor]]:
    """Per-seed loss [S] and gradients in Net.parameters() order: [dW_1, db_1, ..., dW_L, db_L]."""
    t = net.trace(x)
    loss, g = output_grad(t.out, target, kind)
    return loss, backward(net, t.inputs, t.pre, g)
