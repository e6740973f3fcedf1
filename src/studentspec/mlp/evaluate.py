"""Streaming, ensemble-batched specialization metrics (docs/model.md section 2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..ensemble.corr import CorrAccumulator, LayerStats, layer_stats
from ..ensemble.losses import output_grad, per_seed_loss
from . import backprop
from . import kernel as ckernel
from .nets import Net


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
def evaluate(
    teacher: Net,
    student: Net,
    x: Tensor,
    y: Tensor,
    *,
    loss_kind: str,
    chunk: int = 256,
    with_grad: bool = False,
    kernel: str = "auto",
    teacher_acts: list[Tensor] | None = None,
) -> SplitEval:
    """MSE, loss and per-layer correlation statistics over inputs x [S, N, d] with teacher outputs y.

    With `with_grad`, also the full-batch gradient norm per layer (see grad_norms), from the same
    forward pass: through the compiled pass (ckernel, where it applies and `kernel` is not
    "torch"), else the hand-derived backward when the net has no BatchNorm, else autograd.
    `teacher_acts` (from teacher_hidden() on the same x and chunk) saves the teacher's forward.
    The passes run in the nets' dtype; every sum (MSE, loss, correlations, the gradient) is float64.
    """
    depth = len(teacher.weights) - 1
    compiled = (
        ckernel.CompiledMLP(student, loss_kind)
        if kernel != "torch" and not ckernel.unsupported(student, loss_kind)
        else None
    )
    fused = with_grad and (compiled is not None or backprop.supports(student))
    accs = [CorrAccumulator() for _ in range(depth)]
    sq = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    loss = torch.zeros_like(sq)
    # the full-batch gradient is summed in float64 whatever the pass's precision; a float32 pass (eval.dtype) writes
    # each chunk's gradient to a scratch buffer that is then added in float64
    grads: list[Tensor] = (
        [torch.zeros_like(p, dtype=torch.float64) for p in student.parameters()]
        if compiled is not None and with_grad
        else []
    )
    scratch = (
        [torch.zeros_like(p) for p in student.parameters()]
        if grads and student.weights[0].dtype != torch.float64
        else []
    )
    n = x.shape[1]
    # the compiled pass writes every chunk's activations into the same storage (fresh tensors cost page faults)
    storage = (
        [torch.empty(x.shape[0] * min(chunk, n) * w.shape[2], dtype=w.dtype) for w in student.weights[:-1]]
        if compiled is not None
        else None
    )
    for i in range(0, n, chunk):
        xb, yb = x[:, i : i + chunk], y[:, i : i + chunk]
        t_hidden = [h[:, i : i + chunk] for h in teacher_acts] if teacher_acts is not None else teacher.forward(xb)[1]
        if compiled is not None:
            chunk_loss, chunk_sq = _compiled_chunk(
                compiled,
                xb,
                yb,
                t_hidden,
                accs,
                grads=grads,
                scratch=scratch,
                with_grad=with_grad,
                n=n,
                storage=storage,
            )
        else:
            chunk_loss, chunk_sq, grads = _torch_chunk(
                student, xb, yb, t_hidden, accs, loss_kind=loss_kind, fused=fused, grads=grads, n=n
            )
        sq += chunk_sq
        loss += chunk_loss * xb.shape[1]
    layers = [layer_stats(acc.corr(), acc.variances()[0] > 0) for acc in accs]
    result = SplitEval(sq / (n * y.shape[2]), loss / n, layers, path="c" if compiled is not None else "torch")
    if fused:
        result.grad_norm = _layer_norms(grads)
    elif with_grad:
        with torch.enable_grad():
            result.grad_norm = grad_norms(student, x, y, loss_kind, chunk=chunk)
    return result


def _compiled_chunk(
    compiled: ckernel.CompiledMLP,
    xb: Tensor,
    yb: Tensor,
    t_hidden: list[Tensor],
    accs: list[CorrAccumulator],
    *,
    grads: list[Tensor],
    scratch: list[Tensor],
    with_grad: bool,
    n: int,
    storage: list[Tensor] | None,
) -> tuple[Tensor, Tensor]:
    """One chunk through the compiled pass: (per-seed loss, per-seed squared error); adds to accs and grads."""
    for t in scratch:
        t.zero_()
    chunk_loss, chunk_sq, s_hidden = compiled.forward_grad(
        xb, yb, hidden=True, grads=(scratch or grads) if with_grad else None, gscale=xb.shape[1] / n, storage=storage
    )
    for total, part in zip(grads, scratch):
        total.add_(part)
    for acc, th, sh in zip(accs, t_hidden, s_hidden):
        if acc.n and th.dtype == sh.dtype:  # past the first chunk (it sets the shifts, in torch): one pass in C
            compiled.corr_update(acc, th, sh)
        else:
            acc.update(th, sh)
    return chunk_loss, chunk_sq


def _torch_chunk(
    student: Net,
    xb: Tensor,
    yb: Tensor,
    t_hidden: list[Tensor],
    accs: list[CorrAccumulator],
    *,
    loss_kind: str,
    fused: bool,
    grads: list[Tensor],
    n: int,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """One chunk through torch: (per-seed loss in float64, squared error, the gradient sums so far)."""
    trace = student.trace(xb)
    out = trace.out
    for acc, th, sh in zip(accs, t_hidden, trace.hidden):
        acc.update(th, sh)
    chunk_sq = (out - yb).double().square().sum(dim=(1, 2))
    if fused:
        chunk_loss, g = output_grad(out, yb, loss_kind)
        parts = backprop.backward(student, trace.inputs, trace.pre, g.mul_(xb.shape[1] / n))
        grads = (
            [b.double() for b in parts] if not grads else [a.add_(b) for a, b in zip(grads, parts)]
        )  # no copy in float64
    else:
        chunk_loss = per_seed_loss(out, yb, loss_kind)
    return chunk_loss.double(), chunk_sq, grads


def _layer_norms(grads: list[Tensor]) -> Tensor:
    """[dW_1, db_1, ...] -> per-seed norm of each layer's augmented-weight gradient, [S, L]."""
    sq = [grads[2 * l].square().sum((1, 2)) + grads[2 * l + 1].square().sum(1) for l in range(len(grads) // 2)]
    return torch.stack(sq, dim=1).sqrt()


def grad_norms(student: Net, x: Tensor, y: Tensor, loss_kind: str, *, chunk: int = 256) -> Tensor:
    """Full-batch gradient norm of the loss w.r.t. each layer's
    augmented weights, [S, L] (autograd; BatchNorm in eval mode)."""
    params = [t.detach().requires_grad_(True) for t in student.parameters()]
    depth = len(student.weights)
    probe = Net(
        params[0 : 2 * depth : 2],
        params[1 : 2 * depth : 2],
        student.activation,
        student.slope,
        student.batchnorm,
        student.norms,
    )
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params[: 2 * depth]]
    n = x.shape[1]
    for i in range(0, n, chunk):
        xb, yb = x[:, i : i + chunk], y[:, i : i + chunk]
        out, _ = probe.forward(xb)
        loss = per_seed_loss(out, yb, loss_kind).sum() * (xb.shape[1] / n)
        for acc, g in zip(total, torch.autograd.grad(loss, params[: 2 * depth])):
            acc += g
    return _layer_norms(total).detach()
