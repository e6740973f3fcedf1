"""The MLP trainer's three ways to take a step (ensemble/loop.py's Strategy), and the constraints that act after each.

- compiled (mlp/kernel): plain SGD in C, batches of a fixed training set gathered in the kernel, blocks of steps
  per call;
- hand backward (backprop.py): torch ops with the hand-derived gradients; plain SGD fused into the backward;
- autograd: everything else (BatchNorm students).

Which one a run takes, and with which settings, is decided in one place: mlp.train.choose_steps.
Every path computes a seed's numbers from that seed's data only, and leaves a dead seed exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import Config
from ..ensemble.batched import bmm
from ..ensemble.loop import Divergence
from ..ensemble.losses import output_grad, per_seed_loss
from ..ensemble.optim import Optimizer, seed_mask
from . import backprop
from . import kernel as ckernel
from .data import BatchStream
from .nets import Net


def unit_columns(w: Tensor) -> Tensor:
    """w [S, n_in, n_out] with every column w[s, :, k] divided by its L2 norm (student.normalize).

    The squared norms come from a per-seed matmul with a row of ones (ensemble.batched.bmm): the same bits for a seed
    whatever the ensemble size, unlike a sum that torch may split across threads by the tensor's shape. Each column
    is first divided by its largest |entry| (a max is exact in any order), so huge weights of a diverging seed cannot
    overflow the squares to inf and come out as silent zeros; an all-zero column gives NaN, which the divergence
    check sees.
    """
    ones = torch.ones(w.shape[0], 1, w.shape[1], dtype=w.dtype, device=w.device)
    scaled = w / w.abs().amax(dim=1, keepdim=True)
    return scaled / bmm(ones, scaled * scaled).sqrt()


@dataclass
class Constraints:
    """What the original code's knobs impose after every step (docs/model.md 4.5), on every path (compiled or torch).

    Frozen layers (train.freeze) go back to their initial values, bit for bit: SGD computes every layer's update from
    the weights before the step, so this equals never updating them. Hidden weight columns go back to unit norm
    (student.normalize), biases to 0 (teacher.no_bias). A seed frozen for divergence is left as it is.
    """

    frozen: list[tuple[int, Tensor, Tensor]]  # (0-based layer, its W, its b as they were before the first step)
    normalize: list[int]  # 0-based hidden layers whose columns are rescaled (frozen ones are restored instead)
    no_bias: bool

    @classmethod
    def of(cls, cfg: Config, net: Net) -> Constraints:
        """The constraints of cfg's knobs on the student `net`, its present values taken as the frozen ones."""
        idx = sorted(l - 1 for l in cfg.train.freeze)
        frozen = [(l, net.weights[l].detach().clone(), net.biases[l].detach().clone()) for l in idx]
        hidden = [l for l in range(len(net.weights) - 1) if l not in idx] if cfg.student.normalize else []
        return cls(frozen, hidden, cfg.teacher.no_bias)

    def __bool__(self) -> bool:
        return bool(self.frozen or self.normalize or self.no_bias)

    @torch.no_grad()
    def apply(self, net: Net, alive: Tensor) -> None:
        """Impose the constraints on `net` in place after a step; seeds not `alive` keep their parameters."""
        for l in self.normalize:
            w = net.weights[l]
            w.copy_(torch.where(seed_mask(alive, w), unit_columns(w), w))
        if self.no_bias:  # a dead seed's biases are 0 already: it kept the values of its last (constrained) step
            for b in net.biases:
                b.zero_()
        for l, w0, b0 in self.frozen:
            net.weights[l].copy_(w0)
            net.biases[l].copy_(b0)


class MLPSteps:
    """What the three strategies share: the student, its batches, and the constraints applied after every step."""

    name = ""
    kernel = "torch"  # the path evaluations take too (evaluate.py): "c" (the compiled kernel) or "torch"

    def __init__(self, net: Net, stream: BatchStream, constraints: Constraints) -> None:
        self.net, self.stream, self.constraints = net, stream, constraints

    def epoch(self, epoch: int, lr: float, div: Divergence) -> Iterator[Tensor]:
        """Each step of epoch `epoch` at learning rate `lr`, yielding its per-seed loss [S]."""
        steps = self._steps(epoch, lr, div)
        return self._constrained(steps, div.alive) if self.constraints else steps

    def _constrained(self, steps: Iterator[Tensor], alive: Tensor) -> Iterator[Tensor]:
        for loss in steps:
            self.constraints.apply(self.net, alive)
            yield loss

    def _steps(self, epoch: int, lr: float, div: Divergence) -> Iterator[Tensor]:
        raise NotImplementedError


class CompiledSteps(MLPSteps):
    """Plain SGD in the compiled kernel; on a fixed training set, `block` steps per call, each seed's back to back (the
    kernel stops a seed after a non-finite loss itself; the divergence check marks it dead between two calls)."""

    name, kernel = "compiled", "c"

    def __init__(
        self, net: Net, stream: BatchStream, constraints: Constraints, *, compiled: ckernel.CompiledMLP, block: int
    ) -> None:
        super().__init__(net, stream, constraints)
        self.compiled, self.block = compiled, block

    def _steps(self, epoch: int, lr: float, div: Divergence) -> Iterator[Tensor]:
        stream, compiled, alive = self.stream, self.compiled, div.alive
        idx_epoch = stream.indices(epoch)
        if idx_epoch is None:  # online data, full batch: the stream's batches
            for x, y in stream.epoch(epoch):
                loss = compiled(x, y, lr, alive)
                div.check(loss)  # the step ran: it skipped dead seeds and left a seed with a non-finite loss as it was
                yield loss
            return
        x, y = stream.x_train.contiguous(), stream.y_train.contiguous()
        compiled.check_indices(idx_epoch, x.shape[1])
        for t0 in range(0, len(idx_epoch), self.block):
            for loss in compiled.indexed_steps(x, y, idx_epoch[t0 : t0 + self.block], lr=lr, alive=alive):
                div.check(loss)
                yield loss


class BackwardSteps(MLPSteps):
    """The hand-derived backward pass (backprop.py) and the optimizer; with `fused`, plain SGD updates each layer
    inside the backward pass instead."""

    name = "backward"

    def __init__(
        self, net: Net, stream: BatchStream, constraints: Constraints, *, opt: Optimizer, loss: str, fused: bool
    ) -> None:
        super().__init__(net, stream, constraints)
        self.opt, self.loss, self.fused = opt, loss, fused

    def _steps(self, epoch: int, lr: float, div: Divergence) -> Iterator[Tensor]:
        net, opt, kind, sgd_lr = self.net, self.opt, self.loss, lr if self.fused else None
        for x, y in self.stream.epoch(epoch):
            with torch.no_grad():
                trace = net.trace(x)
                loss, g = output_grad(trace.out, y, kind)
                ok = div.check(loss)
                with div.guard(ok, opt):
                    grads = backprop.backward(net, trace.inputs, trace.pre, g if ok else div.masked(g), sgd_lr=sgd_lr)
                    if grads:
                        opt.step(grads, lr)
            yield loss


class AutogradSteps(MLPSteps):
    """torch.autograd's gradients and the optimizer: the path of BatchNorm students."""

    name = "autograd"

    def __init__(self, net: Net, stream: BatchStream, constraints: Constraints, *, opt: Optimizer, loss: str) -> None:
        super().__init__(net, stream, constraints)
        self.opt, self.loss = opt, loss

    def _steps(self, epoch: int, lr: float, div: Divergence) -> Iterator[Tensor]:
        net, opt, kind = self.net, self.opt, self.loss
        for x, y in self.stream.epoch(epoch):
            out, _ = net.forward(x, training=True)
            loss = per_seed_loss(out, y, kind)
            grads = list(torch.autograd.grad(loss.sum(), opt.params))
            loss = loss.detach()
            ok = div.check(loss)
            with div.guard(ok, opt):
                opt.step(grads if ok else [div.masked(g) for g in grads], lr)
            yield loss
