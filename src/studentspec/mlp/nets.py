"""Ensemble MLPs: every tensor has a leading seed axis S; a layer is a batched matmul.

Layer l (1-based) maps h_{l-1} [S, B, n_{l-1}] to h_l = psi(h_{l-1} @ W_l + b_l) with
W_l [S, n_{l-1}, n_l] and b_l [S, n_l]; the top layer L is linear. The augmented weight of
node k is the column [W_l[:, k]; b_l[k]] (science.md section 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..ensemble import activations

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


def activate(z: Tensor, activation: str, slope: float) -> Tensor:
    """psi(z) of a registered activation (activations/)."""
    return activations.get(activation).forward(z, slope)


def activation_grad(z: Tensor, activation: str, slope: float) -> Tensor:
    """psi'(z) of a registered activation: a 0/1 (or slope/1) gate for ReLU and Leaky ReLU, psi'(0) = 0 for ReLU."""
    return activations.get(activation).derivative(z, slope)


@dataclass
class BatchNorm:
    """Ensemble BatchNorm over the node axis of one hidden layer; stats and affine per seed."""

    running_mean: Tensor  # [S, n]
    running_var: Tensor  # [S, n]
    weight: Tensor | None = None  # [S, n] when affine
    bias: Tensor | None = None

    def __call__(self, h: Tensor, training: bool) -> Tensor:
        if training:
            mean = h.mean(dim=1)
            var = h.var(dim=1, unbiased=False)
            with torch.no_grad():
                n = h.shape[1]
                unbiased = var * (n / max(n - 1, 1))
                self.running_mean.lerp_(mean.detach(), BN_MOMENTUM)
                self.running_var.lerp_(unbiased.detach(), BN_MOMENTUM)
        else:
            mean, var = self.running_mean, self.running_var
        out = (h - mean[:, None, :]) / torch.sqrt(var[:, None, :] + BN_EPS)
        if self.weight is not None and self.bias is not None:
            out = out * self.weight[:, None, :] + self.bias[:, None, :]
        return out


@dataclass
class Net:
    """An ensemble of S MLPs of identical shape (teacher or student)."""

    weights: list[Tensor]
    biases: list[Tensor]
    activation: str = "relu"
    slope: float = 0.1
    batchnorm: str = "none"  # none | before | after (the activation)
    norms: list[BatchNorm] = field(default_factory=list)

    @property
    def widths(self) -> list[int]:
        """Hidden widths, bottom to top."""
        return [w.shape[2] for w in self.weights[:-1]]

    @property
    def n_seeds(self) -> int:
        return self.weights[0].shape[0]

    def parameters(self) -> list[Tensor]:
        """Trainable tensors: W_1, b_1, ..., W_L, b_L, then BatchNorm affine params."""
        out = [t for pair in zip(self.weights, self.biases) for t in pair]
        for bn in self.norms:
            if bn.weight is not None and bn.bias is not None:
                out += [bn.weight, bn.bias]
        return out

    def fanout(self, layer: int) -> Tensor:
        """Fan-out weights of hidden layer `layer` (1-based): W_{layer+1}, shape [S, n_layer, n_next]."""
        return self.weights[layer]

    def augmented(self, layer: int) -> Tensor:
        """Augmented weights [w; b] of layer `layer` (1-based), shape [S, n_{layer-1}+1, n_layer]."""
        return torch.cat([self.weights[layer - 1], self.biases[layer - 1][:, None, :]], dim=1)

    def forward(self, x: Tensor, training: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Output [S, B, C] and the post-activation outputs of every hidden layer."""
        h = x
        hidden = []
        depth = len(self.weights)
        for l in range(depth):
            z = baddbmm(self.biases[l][:, None, :], h, self.weights[l])
            if l == depth - 1:
                return z, hidden
            if self.batchnorm == "before":
                z = self.norms[l](z, training)
            h = activate(z, self.activation, self.slope)
            hidden.append(h)
            if self.batchnorm == "after":
                h = self.norms[l](h, training)
        raise AssertionError("unreachable")

    def map(self, fn: Callable[[Tensor], Tensor]) -> "Net":
        """A new Net with `fn` applied to every tensor (weights, biases, BatchNorm state)."""

        def opt(t: Tensor | None) -> Tensor | None:
            return None if t is None else fn(t)

        norms = [BatchNorm(fn(bn.running_mean), fn(bn.running_var), opt(bn.weight), opt(bn.bias)) for bn in self.norms]
        return Net([fn(w) for w in self.weights], [fn(b) for b in self.biases], self.activation, self.slope, self.batchnorm, norms)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "Net":
        """A detached copy with every tensor on `device` in `dtype`."""
        return self.map(lambda t: t.detach().to(device=device, dtype=dtype).clone())

    def select(self, index: Tensor | list[int]) -> "Net":
        """The sub-ensemble of the given seed positions (copies)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.weights[0].device)
        return self.map(lambda t: t.detach().index_select(0, idx).clone())


def make_batchnorms(n_seeds: int, widths: list[int], affine: bool, dtype: torch.dtype) -> list[BatchNorm]:
    """Fresh BatchNorm layers (mean 0, var 1, weight 1, bias 0) for each hidden width."""
    out = []
    for n in widths:
        zeros = torch.zeros(n_seeds, n, dtype=dtype)
        ones = torch.ones(n_seeds, n, dtype=dtype)
        out.append(BatchNorm(zeros.clone(), ones.clone(), ones.clone() if affine else None, zeros.clone() if affine else None))
    return out
