"""Closed-form population (infinite-data) loss of a two-layer bias-free teacher-student pair.

Setting (Tian 2020, two-layer case): x ~ N(0, sigma^2 I_d), teacher f*(x) = V*^T psi(W*^T x),
student f(x) = V^T psi(W^T x), psi(z) = max(z, a z) (a = 0: ReLU), W* [d, m], V* [m, C],
W [d, n], V [n, C]. The loss J = 1/2 E_x ||f*(x) - f(x)||^2 only needs the kernel
K(u, w) = E_x[psi(u.x) psi(w.x)], which is closed form (arc-cosine kernel of degree 1):

    ReLU:        K0(u, w) = sigma^2 |u| |w| / (2 pi) * (sin t + (pi - t) cos t),  t = angle(u, w)
    Leaky ReLU:  K(u, w)  = (1 - a)^2 K0(u, w) + a sigma^2 u.w

Leaky derivation: psi(z) = alpha z + beta |z| with alpha = (1+a)/2, beta = (1-a)/2. The cross
terms E[u.x |w.x|] vanish (odd under x -> -x), E[(u.x)(w.x)] = sigma^2 u.w, and
E[|u.x||w.x|] = (2 sigma^2 |u||w| / pi) (sin t + (pi/2 - t) cos t), so
K = sigma^2 |u||w| [alpha^2 cos t + beta^2 (2/pi)(sin t + (pi/2 - t) cos t)]; regrouping with
alpha^2 - beta^2 = a and 2 beta^2 = (1-a)^2 / 2 gives the line above.

erf (psi = erf): K(u, w) = (2/pi) arcsin(2 sigma^2 u.w / sqrt((1 + 2 sigma^2 |u|^2)(1 + 2 sigma^2 |w|^2))),
and linear psi is Leaky ReLU at a = 1 (K = sigma^2 u.w): the activation registry names each one's kernel.

Every tensor may carry a leading seed axis: U [S, d, p] etc.; all functions broadcast over it.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..config import Config, ConfigError, steps_per_epoch
from ..ensemble import activations
from ..ensemble.losses import j_scale

PIPELINES = ("mlp",)  # closed-form population loss of two-layer MLPs; conv configs are refused (exit 2)


class _ArcH(torch.autograd.Function):
    """h(r) = sqrt(1 - r^2) + (pi - arccos r) r, with the analytic derivative h'(r) = pi - arccos r."""

    # Autograd through sqrt and arccos separately gives inf - inf = NaN at r = +-1 (u parallel
    # to w), although h is C^1 there; the hand-written derivative stays finite and exact.

    @staticmethod
    def forward(ctx: Any, r: Tensor) -> Tensor:
        rc = r.clamp(-1.0, 1.0)  # rounding can push |r| a hair above 1
        ctx.save_for_backward(rc)
        return torch.sqrt(1.0 - rc * rc) + (math.pi - torch.arccos(rc)) * rc

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (rc,) = ctx.saved_tensors
        # No clamp mask here: the one-sided derivative at |r| = 1 is the right value.
        return grad * (math.pi - torch.arccos(rc))


def _gram_parts(U: Tensor, W: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Dot products U^T W [.., p, q], column norms |u| [.., p, 1] and |w| [.., 1, q]."""
    dot = U.transpose(-1, -2) @ W
    nu = torch.linalg.vector_norm(U, dim=-2)[..., :, None]
    nw = torch.linalg.vector_norm(W, dim=-2)[..., None, :]
    return dot, nu, nw


def relu_kernel(u: Tensor, w: Tensor, sigma: float = 1.0, slope: float = 0.0) -> Tensor:
    """E_x[psi(u.x) psi(w.x)] for x ~ N(0, sigma^2 I): Gram [.., p, q] of columns of u [.., d, p], w [.., d, q]."""
    vector = u.dim() == 1 and w.dim() == 1
    U, W = (u[:, None], w[:, None]) if vector else (u, w)
    dot, nu, nw = _gram_parts(U, W)
    prod = nu * nw
    # A zero column gives K = 0; dividing by 1 instead of 0 keeps r (and its gradient) finite.
    safe = torch.where(prod > 0, prod, torch.ones_like(prod))
    r = dot / safe
    K = (sigma**2 / (2 * math.pi)) * prod * _ArcH.apply(r)
    if slope != 0.0:
        K = (1.0 - slope) ** 2 * K + slope * sigma**2 * dot
    return K[..., 0, 0] if vector else K


def kernel_grad_contract(U: Tensor, W: Tensor, A: Tensor, *, sigma: float = 1.0, slope: float = 0.0) -> Tensor:
    """sum_j A[j, k] dK(u_j, w_k)/dw_k for every k: [.., d, q] (analytic, no autograd)."""
    # dK0(u, w)/dw = sigma^2/(2 pi) [(pi - t) u + |u| sin t w/|w|]  (= E[psi(u.x) 1(w.x > 0) x]).
    dot, nu, nw = _gram_parts(U, W)
    prod = nu * nw
    r = (dot / torch.where(prod > 0, prod, torch.ones_like(prod))).clamp(-1.0, 1.0)
    t = torch.arccos(r)
    sin = torch.sqrt(1.0 - r * r)
    lin = U @ ((math.pi - t) * A)  # [.., d, q]
    radial = (nu * sin * A).sum(-2, keepdim=True)  # [.., 1, q], coefficient of w_k / |w_k|
    unit_w = W / torch.where(nw > 0, nw, torch.ones_like(nw))
    G = (sigma**2 / (2 * math.pi)) * (lin + radial * unit_w)
    if slope != 0.0:
        G = (1.0 - slope) ** 2 * G + slope * sigma**2 * (U @ A)
    return G


def erf_kernel(u: Tensor, w: Tensor, sigma: float = 1.0, slope: float = 0.0) -> Tensor:
    """E_x[erf(u.x) erf(w.x)] for x ~ N(0, sigma^2 I) (Williams 1997): (2/pi) arcsin(2 s u.w / sqrt((1 + 2 s |u|^2)(1 +
    2 s |w|^2))), s = sigma^2; Gram [.., p, q] of columns of u [.., d, p], w [.., d, q] (`slope` is ignored)."""
    vector = u.dim() == 1 and w.dim() == 1
    U, W = (u[:, None], w[:, None]) if vector else (u, w)
    dot, nu, nw = _gram_parts(U, W)
    s = sigma**2
    K = (2 / math.pi) * torch.arcsin(2 * s * dot / torch.sqrt((1 + 2 * s * nu * nu) * (1 + 2 * s * nw * nw)))
    return K[..., 0, 0] if vector else K


def erf_grad_contract(U: Tensor, W: Tensor, A: Tensor, *, sigma: float = 1.0, slope: float = 0.0) -> Tensor:
    """sum_j A[j, k] dK(u_j, w_k)/dw_k of erf_kernel: [.., d, q] (analytic, no autograd)."""
    # q = 2 s u.w / sqrt(a b), a = 1 + 2 s |u|^2, b = 1 + 2 s |w|^2; dq/dw = 2 s u / sqrt(a b) - q 2 s w / b,
    # dK/dw = (2/pi) dq/dw / sqrt(1 - q^2).
    dot, nu, nw = _gram_parts(U, W)
    s = sigma**2
    a, b = 1 + 2 * s * nu * nu, 1 + 2 * s * nw * nw  # [.., p, 1], [.., 1, q]
    root = torch.sqrt(a * b)
    q = 2 * s * dot / root
    C = A * (2 / math.pi) / torch.sqrt(1 - q * q)  # [.., p, q]
    return 2 * s * (U @ (C / root)) - 2 * s * W * ((C * q).sum(-2, keepdim=True) / b)


# the population kernels: psi's closed-form E_x[psi(u.x) psi(w.x)] and its contracted gradient
KERNELS = {"arccos": (relu_kernel, kernel_grad_contract), "erf": (erf_kernel, erf_grad_contract)}


def _tr(A: Tensor, K: Tensor, B: Tensor) -> Tensor:
    """tr(A^T K B) over the last two axes, batched."""
    return (A * (K @ B)).sum((-2, -1))


def _scale(loss: str, V_t: Tensor) -> float:
    """The training objective `loss` as a multiple of J (losses.j_scale); cross-entropy has no closed form here."""
    scale = j_scale(loss, V_t.shape[-1])
    if scale is None:
        raise ValueError(f"population loss has a closed form for half_sse and mse, not {loss}")
    return scale


def population_loss(
    W_t: Tensor,
    V_t: Tensor,
    W_s: Tensor,
    V_s: Tensor,
    *,
    sigma: float = 1.0,
    slope: float = 0.0,
    loss: str = "half_sse",
    psi: str = "arccos",
) -> Tensor:
    """E_x of the training objective `loss` (losses.py) in closed form: half_sse gives J = 1/2 E_x ||f*(x) - f(x)||^2,
    mse (2/C) J; a scalar, or [S] with a seed axis."""
    if loss != "half_sse":
        return _scale(loss, V_t) * population_loss(W_t, V_t, W_s, V_s, sigma=sigma, slope=slope, psi=psi)
    kernel = KERNELS[psi][0]
    k = dict(sigma=sigma, slope=slope)
    tt = _tr(V_t, kernel(W_t, W_t, **k), V_t)
    ts = _tr(V_t, kernel(W_t, W_s, **k), V_s)
    ss = _tr(V_s, kernel(W_s, W_s, **k), V_s)
    return 0.5 * (tt - 2.0 * ts + ss)


def _analytic_grad(
    W_t: Tensor, V_t: Tensor, W_s: Tensor, V_s: Tensor, *, sigma: float, slope: float, psi: str = "arccos"
) -> tuple[Tensor, Tensor]:
    """(dJ/dW_s, dJ/dV_s) from the kernel's analytic derivative."""
    kernel, contract = KERNELS[psi]
    k = dict(sigma=sigma, slope=slope)
    Kts, Kss = kernel(W_t, W_s, **k), kernel(W_s, W_s, **k)
    gV = Kss @ V_s - Kts.transpose(-1, -2) @ V_t
    # K(w_k, w_k) depends on w_k through both slots; symmetry makes that 2 dK(u, w)/dw at u = w,
    # which the 1/2 of J cancels, so each student k sees sum_j (VV^T)_jk dK(w_j, w_k)/dw_k.
    Vt = V_s.transpose(-1, -2)
    gW = contract(W_s, W_s, V_s @ Vt, **k) - contract(W_t, W_s, V_t @ Vt, **k)
    return gW, gV


def population_grad(
    W_t: Tensor,
    V_t: Tensor,
    W_s: Tensor,
    V_s: Tensor,
    *,
    sigma: float = 1.0,
    slope: float = 0.0,
    method: Literal["analytic", "autograd"] = "analytic",
    loss: str = "half_sse",
    psi: str = "arccos",
) -> tuple[Tensor, Tensor]:
    """Gradient (d/dW_s, d/dV_s) of population_loss(..., loss), per seed when batched."""
    if method == "analytic":
        gW, gV = _analytic_grad(W_t, V_t, W_s, V_s, sigma=sigma, slope=slope, psi=psi)
        if loss == "half_sse":
            return gW, gV
        scale = _scale(loss, V_t)
        return scale * gW, scale * gV
    with torch.enable_grad():
        W = W_s.detach().requires_grad_(True)
        V = V_s.detach().requires_grad_(True)
        # Seeds are independent, so the gradient of the sum is each seed's own gradient.
        total = population_loss(W_t.detach(), V_t.detach(), W, V, sigma=sigma, slope=slope, loss=loss, psi=psi).sum()
        gW, gV = torch.autograd.grad(total, (W, V))
    return gW, gV


class Flow(NamedTuple):
    """Result of gradient_flow: final student, and the loss recorded at `steps`."""

    W: Tensor  # [.., d, n]
    V: Tensor  # [.., n, C]
    loss: Tensor  # [R] or [R, S]
    steps: Tensor  # [R] step indices of the records (0 first, the last step last)


@torch.no_grad()
def gradient_flow(
    W_t: Tensor,
    V_t: Tensor,
    W_s: Tensor,
    V_s: Tensor,
    *,
    steps: int,
    lr: float,
    sigma: float = 1.0,
    slope: float = 0.0,
    record_every: int = 100,
    loss: str = "half_sse",
    psi: str = "arccos",
) -> Flow:
    """Full-batch gradient descent on population_loss(..., loss) (infinite data); small lr approximates the flow.

    With the run's train.loss, `lr` means what train.lr means: the step is the expected SGD step.
    """
    W, V = W_s.clone(), V_s.clone()
    losses, at = [], []
    for step in range(steps + 1):
        if step % record_every == 0 or step == steps:
            losses.append(population_loss(W_t, V_t, W, V, sigma=sigma, slope=slope, loss=loss, psi=psi))
            at.append(step)
        if step == steps:
            break
        gW, gV = population_grad(W_t, V_t, W, V, sigma=sigma, slope=slope, loss=loss, psi=psi)
        W -= lr * gW
        V -= lr * gV
    return Flow(W, V, torch.stack(losses), torch.tensor(at))


def specialization_angles(W_t: Tensor, W_s: Tensor) -> Tensor:
    """Per teacher node, the smallest angle (degrees) to any student node: [.., m]."""
    dot, nt, ns = _gram_parts(W_t, W_s)
    cos = (dot / (nt * ns).clamp_min(torch.finfo(dot.dtype).tiny)).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos.amax(-1)))


def check_supported(cfg: Config) -> None:
    """Raise ConfigError (one line) unless cfg is a net the closed-form population loss describes."""
    t = cfg.teacher
    if len(t.widths) != 1:
        raise ConfigError(
            f"teacher.widths: population loss supports one hidden layer (teacher.widths=[m]), got {t.widths}"
        )
    if t.bias != 0:
        raise ConfigError(f"teacher.bias: population loss needs bias-free nets: set teacher.bias=0, got {t.bias}")
    # These two also give the teacher nonzero biases, whatever teacher.bias says.
    if t.recipe != "two_layer":
        raise ConfigError(
            f"teacher.recipe: population loss needs bias-free nets: set teacher.recipe=two_layer, got {t.recipe}"
        )
    if t.tune:
        raise ConfigError(
            "teacher.tune: population loss needs bias-free nets: set teacher.tune=false (tuning shifts the biases)"
        )
    if cfg.data.kind != "gaussian":
        raise ConfigError(
            f"data.kind: population loss needs Gaussian inputs: set data.kind=gaussian, got {cfg.data.kind}"
        )
    if j_scale(cfg.train.loss, cfg.output_dim) is None:
        raise ConfigError(f"train.loss: population loss has a closed form for half_sse and mse, not {cfg.train.loss}")
    if t.batchnorm != "none":
        raise ConfigError(
            "teacher.batchnorm: population loss supports nets "
            f"without BatchNorm: set teacher.batchnorm=none, got {t.batchnorm}"
        )
    if activations.get(t.activation).population_kernel is None:
        closed = [n for n in activations.names() if activations.get(n).population_kernel is not None]
        raise ConfigError(
            "teacher.activation: population loss has no closed form "
            f"for {t.activation} here (supported: {', '.join(closed)})"
        )


def kernel_args(cfg: Config) -> dict[str, Any]:
    """The sigma, slope and psi keyword arguments of this module's functions for a supported cfg."""
    check_supported(cfg)
    act = activations.get(cfg.teacher.activation)
    slope = act.leaky_slope(cfg.teacher.leaky_slope) if act.leaky_slope is not None else 0.0
    return {"sigma": cfg.data.std, "slope": slope, "psi": act.population_kernel}


def bound_terms(K: Any, d: Any, eps: Any) -> dict[str, np.ndarray]:
    """Claim 4's scalings, up to constants the paper leaves unspecified: sample size and gradient level."""
    # K = m_1 + n_1. Only ratios between predictions are meaningful (unknown constants).
    K, d, eps = (np.asarray(a, dtype=np.float64) for a in (K, d, eps))
    return {
        "samples": K**2.5 * d**3 / eps,  # dataset size O(K^{5/2} d^3 / eps) that suffices...
        "grad_level": eps / (K**1.5 * np.sqrt(d)),  # ...once the gradient is below O(eps / (K^{3/2} sqrt d))
    }


def flow_from_config(cfg: Config, steps: int | None = None, record_every: int = 100) -> dict[str, Any]:
    """Gradient flow on the closed-form loss for every seed of a supported config; a JSON-ready summary.

    Teacher and initial student are the ones `studentspec run` would build (bias-free), in float64;
    the objective is train.loss's population version (losses.j_scale x J; cross-entropy has no
    closed form here), the lr train.lr (a constant), the default step count train.epochs x
    train.steps_per_epoch.
    """
    from ..ensemble import seeding
    from ..mlp.teacher import build_teacher
    from ..mlp.train import init_student

    args = kernel_args(cfg)
    if isinstance(cfg.train.lr, dict):
        raise ConfigError("train.lr: gradient flow on the population loss needs a constant lr")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps: must be >= 1, got {steps}")
    if steps is None:
        steps = cfg.train.epochs * steps_per_epoch(cfg.train, cfg.data.n_train)
    teacher = build_teacher(cfg, seeding.generators(cfg.seeds, "teacher"))
    student = init_student(cfg, seeding.generators(cfg.seeds, "student"), torch.float64, torch.device("cpu"))
    W_t, V_t = teacher.weights[0], teacher.weights[1]
    flow = gradient_flow(
        W_t,
        V_t,
        student.weights[0].detach(),
        student.weights[1].detach(),
        steps=steps,
        lr=cfg.train.lr,
        record_every=record_every,
        loss=cfg.train.loss,
        **args,
    )
    angles = specialization_angles(W_t, flow.W)
    return {
        "seeds": cfg.seeds,
        "steps": flow.steps.tolist(),
        "loss": flow.loss.T.tolist(),  # per seed, at `steps`
        "teacher_angle_deg": angles.tolist(),  # per seed, per teacher node: smallest angle to a student
        "teacher_fanout_norm": V_t.norm(dim=2).tolist(),
        "sigma": args["sigma"],
        "slope": args["slope"],
        "psi": args["psi"],  # the population kernel: arccos (ReLU family, linear) or erf
        "lr": cfg.train.lr,
        "objective": cfg.train.loss,  # the recorded loss is this objective's population value
    }
