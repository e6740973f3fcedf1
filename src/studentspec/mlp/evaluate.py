"""Streaming, ensemble-batched specialization metrics (science.md section 2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import backprop, kernel as ckernel
from ..ensemble.losses import output_grad, per_seed_loss
from .nets import Net, baddbmm

COUNT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


class CorrAccumulator:
    """Pearson correlation [S, teacher, student] from chunks of samples, accumulated in float64.

    Sums are taken around the first chunk's mean, which keeps them well conditioned; a node with
    zero variance (dead, or constant) gets correlation 0.
    """

    def __init__(self) -> None:
        self.n = 0

    def update(self, t: Tensor, s: Tensor) -> None:
        """Add a chunk: teacher outputs t [S, b, m], student outputs s [S, b, n] (same samples)."""
        t, s = t.detach().double(), s.detach().double()
        if self.n == 0:
            self.shift_t, self.shift_s = t.mean(1, keepdim=True), s.mean(1, keepdim=True)
            self.sum_t = torch.zeros_like(self.shift_t[:, 0])
            self.sum_s = torch.zeros_like(self.shift_s[:, 0])
            self.sq_t, self.sq_s = self.sum_t.clone(), self.sum_s.clone()
            self.cross = torch.zeros(t.shape[0], t.shape[2], s.shape[2], dtype=torch.float64, device=t.device)
        t, s = t - self.shift_t, s - self.shift_s
        self.n += t.shape[1]
        self.sum_t += t.sum(1)
        self.sum_s += s.sum(1)
        self.sq_t += t.square().sum(1)
        self.sq_s += s.square().sum(1)
        self.cross = baddbmm(self.cross, t.transpose(1, 2), s)

    def variances(self) -> tuple[Tensor, Tensor]:
        """Population variances of teacher [S, m] and student [S, n] nodes."""
        var_t = (self.sq_t - self.sum_t.square() / self.n) / self.n
        var_s = (self.sq_s - self.sum_s.square() / self.n) / self.n
        return var_t.clamp_min(0), var_s.clamp_min(0)

    def corr(self) -> Tensor:
        """The correlation matrix [S, m, n]."""
        cov = (self.cross - self.sum_t[:, :, None] * self.sum_s[:, None, :] / self.n) / self.n
        var_t, var_s = self.variances()
        denom = torch.sqrt(var_t[:, :, None] * var_s[:, None, :])
        ok = (var_t[:, :, None] > 0) & (var_s[:, None, :] > 0) & torch.isfinite(cov)
        return torch.where(ok, cov / torch.where(ok, denom, 1.0), 0.0).clamp(-1.0, 1.0)


@dataclass
class LayerStats:
    """Specialization statistics of one hidden layer, every tensor with leading seed axis."""

    corr: Tensor  # [S, m, n]
    teacher_best: Tensor  # [S, m] max_k corr
    teacher_best_student: Tensor  # [S, m]
    teacher_counts: Tensor  # [S, m, len(COUNT_THRESHOLDS)] students above each threshold
    teacher_active: Tensor  # [S, m] non-zero variance on this split
    student_best: Tensor  # [S, n] max_j corr
    student_best_teacher: Tensor  # [S, n]


def layer_stats(corr: Tensor, teacher_active: Tensor) -> LayerStats:
    """Best matches and threshold counts from a correlation matrix [S, m, n]."""
    tb, tk = corr.max(dim=2)
    sb, sj = corr.max(dim=1)
    thr = torch.tensor(COUNT_THRESHOLDS, dtype=corr.dtype, device=corr.device)
    counts = (corr[..., None] > thr).sum(dim=2)
    return LayerStats(corr, tb, tk, counts, teacher_active, sb, sj)


def rho_mean(stats: LayerStats) -> Tensor:
    """Mean over active teacher nodes of the best correlation, per seed [S]."""
    act = stats.teacher_active.to(stats.teacher_best.dtype)
    return (stats.teacher_best * act).sum(1) / act.sum(1).clamp_min(1)


def fanout_norms(net: Net) -> list[Tensor]:
    """Per hidden layer, the norm of each node's fan-out weights, [S, n_l]."""
    return [net.fanout(l).detach().double().norm(dim=2) for l in range(1, len(net.weights))]


@dataclass
class SplitEval:
    """Everything measured on one split at one evaluation point."""

    mse: Tensor  # [S]
    loss: Tensor  # [S] the training objective
    layers: list[LayerStats]
    grad_norm: Tensor | None = None  # [S, L] full-batch gradient norm per layer, when asked for
    path: str = "torch"  # which forward ran: "c" (the compiled pass) or "torch"


@torch.no_grad()
def teacher_hidden(teacher: Net, x: Tensor, chunk: int, max_bytes: int) -> list[Tensor] | None:
    """The teacher's hidden activations on x [S, N, d], one [S, N, m_l] per layer, computed chunk by chunk
    exactly as evaluate() would; None if they would take more than max_bytes."""
    size = x.shape[0] * x.shape[1] * sum(w.shape[2] for w in teacher.weights[:-1]) * x.element_size()
    if size > max_bytes:
        return None
    parts = [teacher.forward(x[:, i : i + chunk])[1] for i in range(0, x.shape[1], chunk)]
    return [torch.cat(layer, dim=1) for layer in zip(*parts)]


@torch.no_grad()
def evaluate(teacher: Net, student: Net, x: Tensor, y: Tensor, loss_kind: str, chunk: int = 256, with_grad: bool = False,
             kernel: str = "auto", teacher_acts: list[Tensor] | None = None) -> SplitEval:
    """MSE, loss and per-layer correlation statistics over inputs x [S, N, d] with teacher outputs y.

    With `with_grad`, also the full-batch gradient norm per layer (see grad_norms), from the same
    forward pass: through the compiled pass (ckernel, where it applies and `kernel` is not
    "torch"), else the hand-derived backward when the net has no BatchNorm, else autograd.
    `teacher_acts` (from teacher_hidden() on the same x and chunk) saves the teacher's forward.
    """
    depth = len(teacher.weights) - 1
    compiled = ckernel.CompiledMLP(student, loss_kind) if kernel != "torch" and not ckernel.unsupported(student, loss_kind) else None
    fused = with_grad and (compiled is not None or backprop.supports(student))
    accs = [CorrAccumulator() for _ in range(depth)]
    sq = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    loss = torch.zeros_like(sq)
    grads: list[Tensor] = [torch.zeros_like(p) for p in student.parameters()] if compiled is not None and with_grad else []
    n = x.shape[1]
    for i in range(0, n, chunk):
        xb, yb = x[:, i : i + chunk], y[:, i : i + chunk]
        t_hidden = [h[:, i : i + chunk] for h in teacher_acts] if teacher_acts is not None else teacher.forward(xb)[1]
        if compiled is not None:
            chunk_loss, chunk_sq, s_hidden = compiled.forward_grad(xb, yb, True, grads if with_grad else None, xb.shape[1] / n)
            for acc, th, sh in zip(accs, t_hidden, s_hidden):
                acc.update(th, sh)
            sq += chunk_sq
            loss += chunk_loss * xb.shape[1]
            continue
        if fused:
            out, hs, zs = backprop.forward(student, xb)
            s_hidden = hs[1:]
        else:
            out, s_hidden = student.forward(xb)
        for acc, th, sh in zip(accs, t_hidden, s_hidden):
            acc.update(th, sh)
        sq += (out - yb).double().square().sum(dim=(1, 2))
        if fused:
            chunk_loss, g = output_grad(out, yb, loss_kind)
            part = backprop.backward(student, hs, zs, g.mul_(xb.shape[1] / n))
            grads = part if not grads else [a.add_(b) for a, b in zip(grads, part)]
        else:
            chunk_loss = per_seed_loss(out, yb, loss_kind)
        loss += chunk_loss.double() * xb.shape[1]
    layers = [layer_stats(acc.corr(), acc.variances()[0] > 0) for acc in accs]
    result = SplitEval(sq / (n * y.shape[2]), loss / n, layers, path="c" if compiled is not None else "torch")
    if fused:
        result.grad_norm = _layer_norms(grads)
    elif with_grad:
        with torch.enable_grad():
            result.grad_norm = grad_norms(student, x, y, loss_kind, chunk)
    return result


def _layer_norms(grads: list[Tensor]) -> Tensor:
    """[dW_1, db_1, ...] -> per-seed norm of each layer's augmented-weight gradient, [S, L]."""
    sq = [grads[2 * l].square().sum((1, 2)) + grads[2 * l + 1].square().sum(1) for l in range(len(grads) // 2)]
    return torch.stack(sq, dim=1).sqrt()


def grad_norms(student: Net, x: Tensor, y: Tensor, loss_kind: str, chunk: int = 256) -> Tensor:
    """Full-batch gradient norm of the loss w.r.t. each layer's augmented weights, [S, L] (autograd; BatchNorm in eval mode)."""
    params = [t.detach().requires_grad_(True) for t in student.parameters()]
    depth = len(student.weights)
    probe = Net(params[0 : 2 * depth : 2], params[1 : 2 * depth : 2], student.activation, student.slope, student.batchnorm, student.norms)
    total = [torch.zeros_like(p) for p in params[: 2 * depth]]
    n = x.shape[1]
    for i in range(0, n, chunk):
        xb, yb = x[:, i : i + chunk], y[:, i : i + chunk]
        out, _ = probe.forward(xb)
        loss = per_seed_loss(out, yb, loss_kind).sum() * (xb.shape[1] / n)
        for acc, g in zip(total, torch.autograd.grad(loss, params[: 2 * depth])):
            acc += g
    return _layer_norms(total).detach()
