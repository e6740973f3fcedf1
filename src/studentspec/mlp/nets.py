"""Ensemble MLPs: every tensor has a leading seed axis S; a layer is a batched matmul.

Layer l (1-based) maps h_{l-1} [S, B, n_{l-1}] to h_l = psi(h_{l-1} @ W_l + b_l) with
W_l [S, n_{l-1}, n_l] and b_l [S, n_l]; the top layer L is linear. The augmented weight of
node k is the column [W_l[:, k]; b_l[k]] (docs/model.md section 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..ensemble import activations
from ..ensemble.batched import BN_EPS, BN_MOMENTUM, baddbmm


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
class Trace:
    """One forward pass of an MLP ensemble, every tensor [S, B, width]."""

    out: Tensor  # the linear top layer's output
    inputs: list[
        Tensor
    ]  # what each layer reads: x, then every hidden layer's output (after a BatchNorm placed after psi)
    pre: list[Tensor]  # hidden pre-activations z_l (after a BatchNorm placed before psi)
    hidden: list[Tensor]  # hidden post-activation outputs psi(z_l): what correlations measure


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

    def trace(
        self, x: Tensor, training: bool = False, pre_hook: Callable[[int, Tensor], Tensor] | None = None
    ) -> Trace:
        """The one forward pass of the MLP family: output, every layer's input and every hidden pre-activation.

        `pre_hook(l, z)` (0-based hidden layer l) may replace a pre-activation before BatchNorm and
        psi see it: teacher tuning shifts biases through it, the Lemma check makes z a leaf.
        """
        act = activations.get(self.activation)
        h, inputs, pre, hidden = x, [x], [], []
        depth = len(self.weights)
        for l in range(depth - 1):
            z = baddbmm(self.biases[l][:, None, :], h, self.weights[l])
            if pre_hook is not None:
                z = pre_hook(l, z)
            if self.batchnorm == "before":
                z = self.norms[l](z, training)
            pre.append(z)
            h = act.forward(z, self.slope)
            hidden.append(h)
            if self.batchnorm == "after":
                h = self.norms[l](h, training)
            inputs.append(h)
        return Trace(baddbmm(self.biases[-1][:, None, :], h, self.weights[-1]), inputs, pre, hidden)

    def forward(self, x: Tensor, training: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Output [S, B, C] and the post-activation outputs of every hidden layer (trace()'s)."""
        t = self.trace(x, training)
        return t.out, t.hidden

    def map(self, fn: Callable[[Tensor], Tensor]) -> Net:
        """A new Net with `fn` applied to every tensor (weights, biases, BatchNorm state)."""

        def opt(t: Tensor | None) -> Tensor | None:
            return None if t is None else fn(t)

        norms = [BatchNorm(fn(bn.running_mean), fn(bn.running_var), opt(bn.weight), opt(bn.bias)) for bn in self.norms]
        return Net(
            [fn(w) for w in self.weights],
            [fn(b) for b in self.biases],
            self.activation,
            self.slope,
            self.batchnorm,
            norms,
        )

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Net:
        """A detached copy with every tensor on `device` in `dtype`."""
        return self.map(lambda t: t.detach().to(device=device, dtype=dtype).clone())

    def select(self, index: Tensor | list[int]) -> Net:
        """The sub-ensemble of the given seed positions (copies)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.weights[0].device)
        return self.map(lambda t: t.detach().index_select(0, idx).clone())


def make_batchnorms(n_seeds: int, widths: list[int], affine: bool, dtype: torch.dtype) -> list[BatchNorm]:
    """Fresh BatchNorm layers (mean 0, var 1, weight 1, bias 0) for each hidden width."""
    out = []
    for n in widths:
        zeros = torch.zeros(n_seeds, n, dtype=dtype)
        ones = torch.ones(n_seeds, n, dtype=dtype)
        out.append(
            BatchNorm(zeros.clone(), ones.clone(), ones.clone() if affine else None, zeros.clone() if affine else None)
        )
    return out
