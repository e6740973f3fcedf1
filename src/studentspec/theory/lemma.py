"""Theory diagnostics (docs/model.md sections 2-3): gradient decomposition, per-sample gradients,
boundary observation, weight-space alignment. Batched over seeds and samples, no Python loops
over either.

Notation. For hidden layer l, J_l(x) [n_l, C] is the Jacobian of the student output with
respect to the layer-l node outputs (J_{L-1} = V, J_{l-1} = W_l D_l J_l), and J*_l likewise
for the teacher. The output is affine in every layer's outputs within a gate pattern:
f = J_l^T f_l + c_l(x), with c_l collecting the biases above l. Writing f~_l = [f_l; 1], the
Lemma's mixing matrices are A_l = J_l [J*_l^T, c*_l] [n_l, m_l+1] and B_l = J_l [J_l^T, c_l]
[n_l, n_l+1], and the back-propagated signal of the loss 1/2 ||f* - f||^2 at the layer's
pre-activations is -dLoss/dz_l = D_l [A_l f*~_l - B_l f~_l]. With A_{L-1} = V V*^T (augmented
with the output bias) this is the top-down recursion of the paper.

METRIC declares the diagnostics as a per-evaluation metric of MLP runs (theory.enabled, mlp/metrics.py): measured
on the training data, stored as columns of the three tables, drawn by paper/figures.py theory_figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..ensemble import activations
from ..ensemble.losses import sample_grad
from ..mlp.evaluate import SplitEval
from ..mlp.metrics import Columns, Context, EvalMetric, Figure, Rows
from ..mlp.nets import Net

PIPELINES = ("mlp",)  # the Lemma's diagnostics need MLP ensembles (theory.enabled on a conv config: exit 2)


@dataclass
class Pass:
    """One network's forward pass with everything the diagnostics need, per seed and sample."""

    hidden: list[Tensor]  # node outputs f_l, [S, N, n_l] for l = 1..L-1
    gates: list[Tensor]  # psi'(z_l), [S, N, n_l]
    jac: list[Tensor]  # J_l, [S, N, n_l, C]
    offset: list[Tensor]  # c_l = f - J_l^T f_l, [S, N, C]
    out: Tensor  # [S, N, C]


def trace(net: Net, x: Tensor) -> Pass:
    """Forward pass plus per-sample Jacobians of the output w.r.t. every hidden layer (no BatchNorm)."""
    if net.batchnorm != "none":
        raise ValueError("theory diagnostics support nets without BatchNorm")
    depth = len(net.weights)
    fwd = net.trace(x)
    act = activations.get(net.activation)
    hidden, out = fwd.hidden, fwd.out
    gates = [act.derivative(z, net.slope) for z in fwd.pre]
    S, N, C = out.shape
    jac = [net.weights[-1][:, None].expand(S, N, *net.weights[-1].shape[1:])]
    for l in range(depth - 2, 0, -1):  # J_{l-1} = W_l D_l J_l (l is 0-based here)
        jac.insert(0, torch.einsum("sij,snj,snjc->snic", net.weights[l], gates[l], jac[0]))
    offset = [out - torch.einsum("snk,snkc->snc", f, j) for f, j in zip(hidden, jac)]
    return Pass(hidden, gates, jac, offset, out)


def _augment(f: Tensor) -> Tensor:
    return torch.cat([f, torch.ones_like(f[..., :1])], dim=-1)


def mixing(student: Pass, teacher: Pass, layer: int) -> tuple[Tensor, Tensor]:
    """A_l(x) [S, N, n_l, m_l+1] and B_l(x) [S, N, n_l, n_l+1] of hidden layer `layer` (1-based)."""
    j, js = student.jac[layer - 1], teacher.jac[layer - 1]
    A = torch.einsum("snkc,snjc->snkj", j, torch.cat([js, teacher.offset[layer - 1][:, :, None]], dim=2))
    B = torch.einsum("snkc,snjc->snkj", j, torch.cat([j, student.offset[layer - 1][:, :, None]], dim=2))
    return A, B


def backprop_terms(student: Pass, teacher: Pass, layer: int) -> tuple[Tensor, Tensor]:
    """The Lemma's two terms D_l A_l f*~_l and D_l B_l f~_l, each [S, N, n_l]."""
    A, B = mixing(student, teacher, layer)
    fs, f = _augment(teacher.hidden[layer - 1]), _augment(student.hidden[layer - 1])
    gate = student.gates[layer - 1]
    return gate * torch.einsum("snkj,snj->snk", A, fs), gate * torch.einsum("snkj,snj->snk", B, f)


def backprop_signal(student: Pass, teacher: Pass, layer: int) -> Tensor:
    """The Lemma's D_l [A_l f*~_l - B_l f~_l], [S, N, n_l]: equals -dJ/dz_l for J = 1/2 ||f* - f||^2."""
    a, b = backprop_terms(student, teacher, layer)
    return a - b


@torch.no_grad()
def expected_mixing(teacher: Net, student: Net, x: Tensor, layer: int, *, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """E_x[A_l(x)] [S, n_l, m_l+1] and E_x[B_l(x)] [S, n_l, n_l+1] over inputs x [S, N, d]."""
    total_a = total_b = None
    for i in range(0, x.shape[1], chunk):
        xb = x[:, i : i + chunk]
        A, B = mixing(trace(student, xb), trace(teacher, xb), layer)
        a, b = A.sum(dim=1), B.sum(dim=1)
        total_a, total_b = (a, b) if total_a is None or total_b is None else (total_a + a, total_b + b)
    assert total_a is not None and total_b is not None
    return total_a / x.shape[1], total_b / x.shape[1]


@torch.no_grad()
def expected_beta_diag(student: Net, x: Tensor, chunk: int = 256) -> list[Tensor]:
    """Per hidden layer, sqrt(E_x[beta_kk(x)]) = sqrt(E_x ||J_l(x)[k]||^2), [S, n_l]: the deep L-shape's y."""
    sums: list[Tensor] = []
    for i in range(0, x.shape[1], chunk):
        p = trace(student, x[:, i : i + chunk])
        parts = [j.square().sum(dim=(1, 3)) for j in p.jac]
        sums = parts if not sums else [a + b for a, b in zip(sums, parts)]
    return [(s / x.shape[1]).sqrt() for s in sums]


@torch.no_grad()
def per_sample_grad_norms(
    student: Net, x: Tensor, y: Tensor, loss_kind: str = "half_sse", *, chunk: int = 1024
) -> Tensor:
    """Norm of each sample's gradient of its loss (losses.py; half_sse:
    1/2 ||f*(x) - f(x)||^2) w.r.t. each layer's augmented weights, [S, N, L].

    The gradient of layer l at one sample is the outer product [h_{l-1}; 1] g_l^T, so its
    Frobenius norm is ||[h_{l-1}; 1]|| ||g_l|| with g_l = dLoss/dz_l.
    """
    out_norms = []
    depth = len(student.weights)
    for i in range(0, x.shape[1], chunk):
        xb = x[:, i : i + chunk]
        p = trace(student, xb)
        g = sample_grad(p.out, y[:, i : i + chunk], loss_kind)
        inputs = [xb, *p.hidden]
        norms = [torch.empty(0)] * depth
        for l in range(depth - 1, -1, -1):
            norms[l] = _augment(inputs[l]).norm(dim=2) * g.norm(dim=2)
            if l > 0:
                g = torch.einsum("snj,sij->sni", g, student.weights[l]) * p.gates[l - 1]
        out_norms.append(torch.stack(norms, dim=2))
    return torch.cat(out_norms, dim=1)


def grad_norm_summary(norms: Tensor, quantiles: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, Tensor]:
    """max, mean and quantiles over samples of per-sample gradient norms [S, N, L] -> each [S, L]."""
    out = {"max": norms.max(dim=1).values, "mean": norms.mean(dim=1)}
    q = torch.quantile(norms.double(), torch.tensor(quantiles, dtype=torch.float64, device=norms.device), dim=1)
    for v, t in zip(quantiles, q):
        out[f"q{v:g}"] = t.to(norms.dtype)
    return out


@torch.no_grad()
def observation(teacher: Net, student: Net, x: Tensor, near: float = 0.1) -> tuple[Tensor, Tensor]:
    """Boundary observation of the lowest layer over inputs x [S, N, d].

    obs[s, j, k] = min(#samples where teacher j and student k are both active,
                       #samples where j is inactive and k is active), [S, m, n];
    near[s, j] = fraction of samples within distance `near` of teacher j's boundary hyperplane.
    Student k observes teacher j when obs > 0.
    """
    zt, zs = teacher.trace(x).pre[0], student.trace(x).pre[0]
    at, as_ = (zt > 0).to(x.dtype), (zs > 0).to(x.dtype)
    both = torch.einsum("snj,snk->sjk", at, as_)
    only_student = torch.einsum("snj,snk->sjk", 1 - at, as_)
    distance = zt.abs() / teacher.weights[0].norm(dim=1)[:, None, :]
    near_frac = (distance < near).to(x.dtype).mean(dim=1)
    return torch.minimum(both, only_student), near_frac


def alignment(teacher: Net, student: Net, layer: int = 1) -> Tensor:
    """Angle in degrees between augmented weight vectors of every teacher and student node, [S, m, n]."""
    wt = teacher.augmented(layer).detach().double()
    ws = student.augmented(layer).detach().double()
    cos = torch.einsum("sij,sik->sjk", wt, ws) / (wt.norm(dim=1)[:, :, None] * ws.norm(dim=1)[:, None, :]).clamp_min(
        1e-300
    )
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def hungarian(score: Tensor) -> Tensor:
    """One-to-one matching maximizing the total score per seed: for each teacher its student, [S, m]."""
    from scipy.optimize import linear_sum_assignment

    out = []
    for s in score.detach().cpu().double().numpy():  # scipy has no batched solver
        rows, cols = linear_sum_assignment(s, maximize=True)
        out.append(torch.as_tensor(cols[rows.argsort()]))
    return torch.stack(out)


@dataclass
class Diagnostics:
    """Theory diagnostics at one evaluation point; see docs/theory.md."""

    beta_norm: list[Tensor]  # per hidden layer, sqrt(E_x beta_kk) per student node, [S, n_l]
    grad: dict[str, Tensor]  # per-sample gradient-norm summary, each [S, L]
    observed: Tensor  # [S, m_1] some student observes lowest-layer teacher j
    near_boundary: Tensor  # [S, m_1] fraction of samples near j's boundary
    min_angle: Tensor  # [S, m_1] smallest angle (degrees) to any student's augmented weight
    min_angle_student: Tensor  # [S, m_1]
    hungarian: list[Tensor]  # per hidden layer, one-to-one matched student per teacher, [S, m_l]


@torch.no_grad()
def diagnose(
    teacher: Net,
    student: Net,
    x: Tensor,
    y: Tensor,
    *,
    corr: list[Tensor],
    near: float,
    quantiles: list[float],
    loss_kind: str = "half_sse",
) -> Diagnostics:
    """Every diagnostic on inputs x [S, N, d] with teacher outputs
    y; corr[l] is layer l's [S, m, n]; gradients of `loss_kind`."""
    obs, near_frac = observation(teacher, student, x, near)
    angle = alignment(teacher, student).to(x.device)
    best = angle.min(dim=2)
    return Diagnostics(
        beta_norm=expected_beta_diag(student, x),
        grad=grad_norm_summary(per_sample_grad_norms(student, x, y, loss_kind), tuple(quantiles)),
        observed=(obs > 0).any(dim=2),
        near_boundary=near_frac,
        min_angle=best.values,
        min_angle_student=best.indices,
        hungarian=[hungarian(c) for c in corr],
    )


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def measure(ctx: Context) -> Diagnostics:
    """Diagnostics of the first split (training data; the eval
    set for online data) on its first theory.samples samples."""
    th = ctx.cfg.theory
    x, y = ctx.splits[ctx.first]
    corr = [ls.corr for ls in ctx.points[ctx.first].layers]
    return diagnose(
        ctx.teacher_run,
        ctx.student,
        x[:, : th.samples],
        y[:, : th.samples],
        corr=corr,
        near=th.near,
        quantiles=th.quantiles,
        loss_kind=ctx.cfg.train.loss,
    )


def columns(th: Diagnostics, point: SplitEval, rows: Rows) -> None:
    """Per-sample gradient quantiles per layer (scalars), Hungarian matches and beta norms (per layer), observation,
    boundary proximity and weight angles (lowest teacher layer)."""
    for key, val in th.grad.items():
        for l in range(val.shape[1]):
            rows.scalars[f"ps_grad_{key}_{l + 1}"] = _np(val[:, l])
    for l, (t, s) in enumerate(zip(rows.teachers, rows.students)):
        match = th.hungarian[l].to(point.layers[l].corr.device)
        t["hungarian_student"] = _np(match).ravel()
        t["hungarian_corr"] = _np(point.layers[l].corr.gather(2, match[:, :, None]).squeeze(2)).ravel()
        s["beta_norm"] = _np(th.beta_norm[l]).ravel()
    lowest = rows.teachers[0]
    lowest["observed"] = _np(th.observed).ravel()
    lowest["near_boundary"] = _np(th.near_boundary).ravel()
    lowest["min_angle"] = _np(th.min_angle).ravel()
    lowest["min_angle_student"] = _np(th.min_angle_student).ravel()


METRIC = EvalMetric(
    name="theory",
    title="the Lemma's diagnostics",
    switch="theory.enabled",
    measure=measure,
    columns=Columns(
        columns,
        scalars=("ps_grad_*_*",),
        students=("beta_norm",),
        teachers=("hungarian_student", "hungarian_corr", "observed", "near_boundary", "min_angle", "min_angle_student"),
    ),
    figure=Figure(
        "theory",
        "studentspec.paper.figures:theory_figure",
        "Theory diagnostics: sqrt(E beta_kk) L-shape per layer, per-sample gradient norms, lowest-layer angles.",
    ),
)
