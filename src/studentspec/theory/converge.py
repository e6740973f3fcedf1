"""Drive a trained student to an (SGD) critical point and check the theorem's conclusions.

docs/model.md claims 2 and 3 are statements about a student at which the gradient vanishes at
EVERY training sample. SGD only gets near such a point; this module continues from a trained
student in float64 on the full (fixed) training set until the largest per-sample gradient norm
(lemma.per_sample_grad_norms, max over samples and layers) is below `tol`, then checks:

- conclusion 2: every lowest-layer teacher node j has a student node k whose augmented weight
  w~_k = [w_k; b_k] is within `angle_tol` degrees of w~*_j ("specialized");
- conclusion 3 (claimed for two-layer nets): every student node aligned with no teacher has
  fan-out norm ||v_k|| (row k of W_2) below a threshold. Dead students (output identically
  zero on the training set: never active for ReLU, w~_k = 0 for Leaky ReLU) do not affect f,
  and constant ones (output constant on the training set, typically w_k = 0 with b_k > 0)
  only shift it by a constant the output bias absorbs, so their fan-out is arbitrary at a
  critical point; they are reported and left out.

Finite data caveat: the theorem's data assumptions are not checked. With a finite Gaussian
training set, several students can sit a fraction of a degree to a few degrees from one
teacher with the same gate pattern on every training sample (no sample between their
boundaries); the fit is then exact, the per-sample gradient zero, and conclusion 3 fails at
a 1 degree tolerance. Teacher-aware boundary data (docs/model.md 4.2) removes that freedom.

The objective is the run's training objective on the full training set (losses.py): for
train.loss=half_sse the paper's J = 1/2 mean_x ||f*(x) - f(x)||^2, for mse (2/C) J (same
critical points); a cross-entropy run is converged on J, with a note. It is exactly the mean of
the per-sample losses whose gradients theory measures and `tol` bounds. Seeds are independent problems and are solved
one after the other (a post-processing step; no ensemble batching needed).

Methods. "lbfgs": torch.optim.LBFGS with strong-Wolfe line search, restarted every
`check_every` iterations on the loss divided by its value at the restart. The rescaling keeps
the curvature pairs y.s far above LBFGS's fixed 1e-10 acceptance threshold, which otherwise
freezes its memory once the loss is small. "newton": Levenberg-Marquardt-damped exact Newton,
the Hessian by reverse-over-reverse autograd (exact within the current ReLU gate pattern),
eigendecomposed each step: step = -(H + mu I)^-1 g with mu >= -lambda_min adapted by the ratio
of actual to predicted decrease. Newton costs one Hessian (P Hessian-vector products, P =
number of parameters) per step, fine for the small nets this check is meant for; it converges
quadratically to a zero-loss point in 10-30 steps. Both stop early ("stalled") when progress
dies: at the rounding floor, or when a training sample sits on a student's boundary (a ReLU
kink) and the loss only creeps down; `reached` is then False.

At the end point of each seed the spectrum of the full-batch Hessian of the same objective is
computed (theory/hessian.py: exact up to `hessian_exact_max` parameters, else Lanczos extremes):
its near-zero eigenvalues are the flat directions (rescaling symmetries, dead and split nodes),
its negative ones show a saddle.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..config import Config, ConfigError
from ..ensemble import activations
from ..ensemble.atomic import write_all
from ..ensemble.losses import per_seed_loss
from ..mlp.data import label
from ..mlp.nets import Net
from ..mlp.train import build
from ..store import StoreError, check_files, claim_files, load_run, strict_json
from . import hessian as hess
from . import lemma

PIPELINES = ("mlp",)  # converge continues MLP runs (the theorem's setting); conv runs are refused (exit 2)

METHODS = ("auto", "lbfgs", "newton")  # auto: newton up to NEWTON_MAX_PARAMS parameters per seed, else lbfgs
DEFAULT_MAX_ITER = {"lbfgs": 20000, "newton": 300}  # LBFGS iterations / Newton steps per seed
NEWTON_MAX_PARAMS = 4000  # a dense P x P Hessian is built and eigendecomposed every Newton step
OBJECTIVES = {
    "half_sse": "J = 1/2 mean_x ||f*(x) - f(x)||^2 (sum over outputs, mean over training samples): train.loss=half_sse",
    "mse": "(2/C) J = mean over training samples and outputs of (f*(x) - f(x))^2: train.loss=mse",
}


@dataclass(frozen=True)
class ConvergeOptions:
    """converge's settings (docstring of converge()); out-of-range values raise a one-line ConfigError when built."""

    tol: float = 1e-10  # target max per-sample gradient norm
    max_iter: int | None = None  # LBFGS iterations or Newton steps per seed; None: DEFAULT_MAX_ITER[method]
    method: str = "auto"  # one of METHODS
    angle_tol: float = 1.0  # degrees: "aligned" students, "specialized" teachers
    fanout_rtol: float = 1e-3  # conclusion 3's threshold relative to the seed's largest student fan-out norm
    fanout_tol: float | None = None  # ... or absolute
    flat_rtol: float = 1e-6  # a student is "constant" below this fraction of the seed's largest output std
    check_every: int = 100  # LBFGS iterations between restarts and checks
    hessian_exact_max: int = hess.EXACT_MAX
    hessian_k: int = hess.LANCZOS_K
    hessian_tol_rel: float = hess.TOL_REL

    def __post_init__(self) -> None:
        tol, max_iter = self.tol, self.max_iter
        if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and tol > 0 and math.isfinite(tol)):
            raise ConfigError(f"tol: must be a finite number > 0 (got {tol!r})")
        if max_iter is not None and (not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 0):
            raise ConfigError(f"max_iter: must be an integer >= 0 (got {max_iter!r})")
        if self.method not in METHODS:
            raise ConfigError(f"method: must be one of {METHODS}, got {self.method!r}")
        if not 0 < self.angle_tol < 180:
            raise ConfigError(f"angle_tol: must lie in (0, 180) degrees (got {self.angle_tol!r})")
        if not self.fanout_rtol > 0:
            raise ConfigError(f"fanout_rtol: must be > 0 (got {self.fanout_rtol!r})")
        if self.fanout_tol is not None and not self.fanout_tol > 0:
            raise ConfigError(f"fanout_tol: must be > 0 (got {self.fanout_tol!r})")
        if not 0 <= self.flat_rtol < 1:
            raise ConfigError(f"flat_rtol: must lie in [0, 1) (got {self.flat_rtol!r})")
        if isinstance(self.check_every, bool) or not isinstance(self.check_every, int) or self.check_every < 1:
            raise ConfigError(f"check_every: must be an integer >= 1 (got {self.check_every!r})")
        hess.check_args(self.hessian_exact_max, self.hessian_k, self.hessian_tol_rel)


@dataclass
class SeedConvergence:
    """One seed's optimization and the theorem's conclusions at its end point."""

    seed: int
    iterations: int  # LBFGS iterations or Newton steps
    grad_start: float  # max per-sample gradient norm before optimizing
    grad_max: float  # ... at the end
    loss_start: float
    loss: float
    reached: bool  # grad_max < tol
    stop: str  # why the optimizer stopped: tol | max_iter | stalled | non_finite
    conclusions: dict[str, bool | None]  # conclusion_2, conclusion_3
    fanout_threshold: float  # absolute fan-out threshold used for conclusion 3
    max_teacher_angle_deg: float  # over checked teachers, the angle to their best student
    max_unaligned_fanout: float  # over the students conclusion 3 checks (0 when none)
    n_teachers_checked: int  # teachers whose boundary crosses the training set, with fan-out > 0
    n_aligned: int  # students within angle_tol of some teacher
    n_unaligned_checked: int  # unaligned students that are neither dead nor constant
    n_dead: int  # students whose output is zero on every training sample
    n_constant: int  # students whose output is constant (non-zero) on the training set
    hessian: dict[str, Any] = field(default_factory=dict)  # HessianSpectrum.summary() at the end point


@dataclass
class ConvergeResult:
    """Per-seed convergence, the teacher and student tables, and the converged student."""

    method: str
    tol: float
    max_iter: int
    angle_tol: float
    fanout_rtol: float
    fanout_tol: float | None
    flat_rtol: float
    per_seed: list[SeedConvergence]
    teachers: pd.DataFrame
    students: pd.DataFrame
    student: Net  # the converged student, float64 CPU
    depth: int
    wall_time: float = 0.0
    notes: list[str] = field(default_factory=list)
    objective: str = "half_sse"  # the losses.py objective minimized (and whose per-sample gradients tol bounds)
    spectra: list[hess.HessianSpectrum] = field(default_factory=list)  # per seed, the Hessian at the end point
    hessian_exact_max: int = hess.EXACT_MAX
    hessian_k: int = hess.LANCZOS_K
    hessian_tol_rel: float = hess.TOL_REL

    @property
    def reached(self) -> bool:
        """Whether every seed got below tol."""
        return all(s.reached for s in self.per_seed)

    @property
    def conclusions(self) -> dict[int, dict[str, bool | None]]:
        """seed -> {conclusion_2, conclusion_3}."""
        return {s.seed: dict(s.conclusions) for s in self.per_seed}

    def to_frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(teachers, students) DataFrames, one row per (seed, node)."""
        return self.teachers.copy(), self.students.copy()

    def hessian_frame(self) -> pd.DataFrame:
        """One row per (seed, eigenvalue): seed, index (position in the ascending spectrum), eigenvalue, method."""
        pairs = list(zip(self.per_seed, self.spectra, strict=True))

        def col(f: Any, dtype: Any) -> np.ndarray:
            return np.concatenate([np.asarray(f(s, h), dtype=dtype) for s, h in pairs] + [np.zeros(0, dtype)])

        return pd.DataFrame(
            {
                "seed": col(lambda s, h: np.full(len(h.eigenvalues), s.seed), np.int64),
                "index": col(lambda s, h: h.index, np.int64),
                "eigenvalue": col(lambda s, h: h.eigenvalues, np.float64),
                "method": col(lambda s, h: np.full(len(h.eigenvalues), h.method, dtype=object), object),
            }
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary: settings, per-seed convergence and conclusions."""
        return {
            "method": self.method,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "angle_tol_deg": self.angle_tol,
            "fanout_rtol": self.fanout_rtol,
            "fanout_tol": self.fanout_tol,
            "flat_rtol": self.flat_rtol,
            "loss": OBJECTIVES[self.objective],
            "grad_measure": "max over training samples and layers of "
            "per-sample gradient norms (lemma.per_sample_grad_norms)",
            "depth": self.depth,
            "reached": self.reached,
            "all_conclusions_hold": all(v is not False for s in self.per_seed for v in s.conclusions.values()),
            "wall_time_s": round(self.wall_time, 3),
            "notes": list(self.notes),
            "hessian": {
                "objective": "the Hessian of the loss above on the full training "
                "set, at the end point, within its ReLU gate pattern",
                "exact_max": self.hessian_exact_max,
                "k": self.hessian_k,
                "tol_rel": self.hessian_tol_rel,
                "near_zero": "|lambda| <= tol_rel * max|lambda| (zero_tol)",
                "negative": "lambda < -zero_tol",
                "lanczos": "the k smallest and k largest eigenvalues; its counts are over those 2k only (lower bounds)",
            },
            "per_seed": {str(s.seed): _jsonable(asdict(s)) for s in self.per_seed},
        }


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None if math.isnan(v) else ("inf" if v > 0 else "-inf")
        out[k] = v
    return out


# ---------------------------------------------------------------------------- one seed's objective


class _Problem:
    """One seed: the flat parameter vector theta (W_1, b_1, ..., W_L, b_L) and its loss."""

    def __init__(self, student: Net, x: Tensor, y: Tensor, objective: str):
        self.objective = objective
        self.shapes = [tuple(p.shape[1:]) for p in student.parameters()]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.activation, self.slope = student.activation, student.slope
        self.x, self.y = x, y  # [N, d], [N, C]

    def flatten(self, student: Net) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in student.parameters()])

    def unflatten(self, theta: Tensor) -> list[Tensor]:
        return [t.view(s) for t, s in zip(torch.split(theta, self.sizes), self.shapes)]

    def net(self, theta: Tensor) -> Net:
        parts = [t.detach().clone()[None] for t in self.unflatten(theta)]
        return Net(parts[0::2], parts[1::2], self.activation, self.slope)

    def loss(self, theta: Tensor) -> Tensor:
        parts = [t[None] for t in self.unflatten(theta)]  # views: the graph reaches theta
        out = Net(parts[0::2], parts[1::2], self.activation, self.slope).forward(self.x[None])[0]
        return per_seed_loss(out, self.y[None], self.objective)[0]

    def grad_max(self, theta: Tensor) -> float:
        """Max over samples and layers of the per-sample gradient norm (theory's measure)."""
        g = lemma.per_sample_grad_norms(self.net(theta), self.x[None], self.y[None], self.objective)
        return float(g.max()) if g.numel() else 0.0


def _lbfgs(p: _Problem, theta: Tensor, tol: float, max_iter: int, check_every: int) -> tuple[Tensor, int, str]:
    it, stop = 0, "max_iter"
    best = float(p.loss(theta))
    stalls = 0
    while it < max_iter:
        if p.grad_max(theta) < tol:
            return theta, it, "tol"
        scale = float(p.loss(theta))
        if not math.isfinite(scale):
            return theta, it, "non_finite"
        if scale == 0.0:
            break
        param = theta.clone().requires_grad_(True)
        chunk = min(check_every, max_iter - it)
        opt = torch.optim.LBFGS(
            [param],
            lr=1.0,
            max_iter=chunk,
            max_eval=2 * chunk + 10,
            history_size=50,
            tolerance_grad=0.0,
            tolerance_change=0.0,
            line_search_fn="strong_wolfe",
        )

        # this iteration's optimizer, parameter and scale, bound now (LBFGS calls it with no arguments)
        def closure(opt: torch.optim.LBFGS = opt, param: Tensor = param, scale: float = scale) -> Tensor:
            opt.zero_grad()
            loss = p.loss(param) / scale
            loss.backward()
            return loss

        opt.step(closure)
        done = int(opt.state[param].get("n_iter", 0))
        it += max(done, 1)
        new = param.detach().clone()
        value = float(p.loss(new))
        if not math.isfinite(value):
            return theta, it, "non_finite"
        if value < best:
            theta = new
            stalls = 0 if value < best * (1 - 1e-6) else stalls + 1
            best = value
        else:
            stalls += 1
        if stalls >= 3:
            stop = "stalled"
            break
    return theta, it, "tol" if p.grad_max(theta) < tol else stop


def _newton(p: _Problem, theta: Tensor, tol: float, max_iter: int) -> tuple[Tensor, int, str]:
    grad_fn = torch.func.grad(p.loss)
    loss = float(p.loss(theta))
    mu_rel, it, idle = 1e-4, 0, 0
    history = [loss]
    while it < max_iter:
        if p.grad_max(theta) < tol:
            return theta, it, "tol"
        if not math.isfinite(loss):
            return theta, it, "non_finite"
        g, H = grad_fn(theta), hess.hessian(p.loss, theta)  # the one dense Hessian (theory/hessian.py)
        if not (bool(torch.isfinite(g).all()) and bool(torch.isfinite(H).all())):
            return theta, it, "non_finite"
        lam, Q = torch.linalg.eigh(H)
        scale = float(lam.abs().max()) or 1.0
        gt = Q.T @ g
        it += 1
        before = loss
        for _ in range(40):  # grow the damping until the step decreases the loss
            mu = max(mu_rel * scale, -float(lam.min()) * (1 + 1e-9) + 1e-15 * scale)
            coef = gt / (lam + mu)
            step = -(Q @ coef)
            if float(step.abs().max()) <= 1e-16 * max(float(theta.abs().max()), 1.0):
                break  # the step no longer changes theta
            pred = -float((gt * coef).sum()) + 0.5 * float((lam * coef.square()).sum())  # model change (< 0)
            value = float(p.loss(theta + step))
            if math.isfinite(value) and value < loss:
                ratio = (value - loss) / pred if pred < 0 else 1.0
                theta, loss = theta + step, value
                mu_rel = max(mu_rel / 10, 1e-15) if ratio > 0.25 else (mu_rel if ratio > 0.1 else mu_rel * 4)
                break
            mu_rel *= 8
        # at the rounding floor, or pinned at a ReLU kink (a training sample on a student's boundary),
        # the loss only creeps down: stop after 5 idle steps in a row or a < 2x decrease in 20 steps
        idle = idle + 1 if loss > before * (1 - 1e-6) else 0
        history.append(loss)
        if idle >= 5 or (len(history) > 20 and loss > 0.5 * history[-21]):
            return theta, it, "tol" if p.grad_max(theta) < tol else "stalled"
    return theta, it, "tol" if p.grad_max(theta) < tol else "max_iter"


# ---------------------------------------------------------------------------- the check


@torch.no_grad()
def _tables(
    teacher: Net, student: Net, x: Tensor, seeds: list[int], options: ConvergeOptions
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """Teacher and student tables of the lowest layer plus each seed's conclusions."""
    angle_tol, fanout_tol, fanout_rtol, flat_rtol = (
        options.angle_tol,
        options.fanout_tol,
        options.fanout_rtol,
        options.flat_rtol,
    )
    ang = lemma.alignment(teacher, student, layer=1)  # [S, m, n]
    zt, fs = teacher.trace(x).pre[0], student.trace(x)
    zs, hs = fs.pre[0], fs.hidden[0]
    t_active = (zt > 0).double().mean(1)  # [S, m]
    s_active = (zs > 0).double().mean(1)
    s_std = hs.std(1, unbiased=False)  # [S, n]: how much a node's output varies over the training set
    s_dead = (hs == 0).all(1)  # output identically zero on the training set
    s_const = ~s_dead & (s_std <= flat_rtol * s_std.max(1, keepdim=True).values)  # constant: an extra output bias
    t_fan = teacher.weights[1].norm(dim=2)  # [S, m]
    s_fan = student.weights[1].norm(dim=2)  # [S, n]
    s_fanin = student.weights[0].norm(dim=1)  # without the bias
    t_best, t_arg = ang.min(2)
    s_best, s_arg = ang.min(1)
    n_close = (ang < angle_tol).sum(2)
    S, m, n = ang.shape
    teach, stud, concl = [], [], []
    depth = len(student.weights)
    for s in range(S):
        checked = (t_active[s] > 0) & (t_active[s] < 1) & (t_fan[s] > 0)
        specialized = t_best[s] < angle_tol
        aligned = s_best[s] < angle_tol
        thr = fanout_tol if fanout_tol is not None else fanout_rtol * float(s_fan[s].max())
        loose = ~aligned & ~s_dead[s] & ~s_const[s]
        c2 = bool(specialized[checked].all())
        c3 = bool((s_fan[s][loose] < thr).all())
        concl.append(
            {
                "conclusion_2": c2,
                "conclusion_3": c3 if depth == 2 else None,
                "fanout_threshold": thr,
                "n_teachers_checked": int(checked.sum()),
                "n_aligned": int(aligned.sum()),
                "n_dead": int(s_dead[s].sum()),
                "n_constant": int(s_const[s].sum()),
                "n_unaligned_checked": int(loose.sum()),
                "max_unaligned_fanout": float(s_fan[s][loose].max()) if bool(loose.any()) else 0.0,
                "max_teacher_angle_deg": float(t_best[s][checked].max()) if bool(checked.any()) else 0.0,
            }
        )
        teach.append(
            pd.DataFrame(
                {
                    "seed": seeds[s],
                    "teacher": np.arange(m),
                    "best_student": t_arg[s].numpy(),
                    "angle_deg": t_best[s].numpy(),
                    "specialized": specialized.numpy(),
                    "n_within_tol": n_close[s].numpy(),
                    "active_frac": t_active[s].numpy(),
                    "fanout_norm": t_fan[s].numpy(),
                    "checked": checked.numpy(),
                }
            )
        )
        stud.append(
            pd.DataFrame(
                {
                    "seed": seeds[s],
                    "student": np.arange(n),
                    "best_teacher": s_arg[s].numpy(),
                    "angle_deg": s_best[s].numpy(),
                    "aligned": aligned.numpy(),
                    "dead": s_dead[s].numpy(),
                    "constant": s_const[s].numpy(),
                    "fanout_norm": s_fan[s].numpy(),
                    "fanin_norm": s_fanin[s].numpy(),
                    "bias": student.biases[0][s].numpy(),
                    "active_frac": s_active[s].numpy(),
                    "output_std": s_std[s].numpy(),
                    "contribution": (s_fan[s] * s_std[s]).numpy(),
                }
            )
        )
    return pd.concat(teach, ignore_index=True), pd.concat(stud, ignore_index=True), concl


def _check_nets(student: Net, teacher: Net) -> None:
    """ConfigError unless teacher and student are nets converge handles (same shape, no BatchNorm, piecewise linear)."""
    if student.batchnorm != "none" or teacher.batchnorm != "none":
        raise ConfigError("converge supports nets without BatchNorm")
    if len(student.weights) < 2 or len(student.weights) != len(teacher.weights):
        raise ConfigError("converge needs a teacher and student of the same depth with at least one hidden layer")
    if (
        student.weights[-1].shape[2] != teacher.weights[-1].shape[2]
        or student.weights[0].shape[1] != teacher.weights[0].shape[1]
    ):
        raise ConfigError("converge: student and teacher differ in input or output dimension")
    if student.activation != teacher.activation:
        raise ConfigError(
            f"converge: student activation {student.activation!r} differs from the teacher's {teacher.activation!r}"
        )
    if not activations.get(student.activation).piecewise_linear:
        raise ConfigError(
            f"converge: supports piecewise-linear activations (the theorem's setting), not {student.activation!r}"
        )


def _method(options: ConvergeOptions, n_params: int) -> tuple[str, int]:
    """(method, max_iter) with "auto" and None resolved for a net of n_params parameters per seed."""
    method = options.method
    if method == "auto":
        method = "newton" if n_params <= NEWTON_MAX_PARAMS else "lbfgs"
    max_iter = DEFAULT_MAX_ITER[method] if options.max_iter is None else options.max_iter
    if method == "newton" and n_params > NEWTON_MAX_PARAMS:
        raise ConfigError(
            f"method=newton: {n_params} parameters per seed is too many "
            f"for a dense Hessian (at most {NEWTON_MAX_PARAMS}); use lbfgs"
        )
    return method, max_iter


def _problem_data(
    cfg: Config | None, student: Net, teacher: Net, x: Tensor, y: Tensor | None
) -> tuple[Net, Net, Tensor, Tensor, list[int]]:
    """(teacher, student, x, y, seed labels) as float64 CPU copies, checked against each other."""
    teacher = teacher.to("cpu", torch.float64)
    student64 = student.to("cpu", torch.float64)
    x = x.detach().to("cpu", torch.float64)
    S = student64.n_seeds
    if x.dim() != 3 or x.shape[0] != S or teacher.n_seeds != S or x.shape[2] != student64.weights[0].shape[1]:
        raise ConfigError(
            f"converge: x must be [S={S}, N, d={student64.weights[0].shape[1]}] matching both nets, got {list(x.shape)}"
        )
    if x.shape[1] == 0:
        raise ConfigError("converge needs a non-empty training set")
    y = label(teacher, x) if y is None else y.detach().to("cpu", torch.float64)
    seeds = list(cfg.seeds) if cfg is not None else list(range(S))
    if len(seeds) != S:
        raise ConfigError(f"converge: cfg has {len(seeds)} seeds but the nets hold {S}")
    return teacher, student64, x, y, seeds


def _solve(
    p: _Problem, theta0: Tensor, method: str, max_iter: int, options: ConvergeOptions, chunk: int
) -> tuple[dict[str, Any], Tensor, hess.HessianSpectrum]:
    """One seed: its run record (SeedConvergence's optimization fields but the seed), end point and Hessian spectrum."""
    tol = options.tol
    g0, l0 = p.grad_max(theta0), float(p.loss(theta0))
    if method == "lbfgs":
        theta, its, stop = _lbfgs(p, theta0, tol, max_iter, options.check_every)
    else:
        theta, its, stop = _newton(p, theta0, tol, max_iter)
    g1 = p.grad_max(theta)
    run = dict(
        iterations=its,
        grad_start=g0,
        grad_max=g1,
        loss_start=l0,
        loss=float(p.loss(theta)),
        reached=g1 < tol,
        stop="tol" if g1 < tol else ("max_iter" if stop == "tol" else stop),
    )
    spectrum = hess.spectrum(
        p.loss,
        theta.detach(),
        exact_max=options.hessian_exact_max,
        k=options.hessian_k,
        tol_rel=options.hessian_tol_rel,
        chunk_size=chunk,
    )
    return run, theta, spectrum


def _notes(depth: int) -> list[str]:
    """What the conclusions leave out, for converge.json."""
    notes = [
        "conclusion_2 counts only teacher nodes whose boundary crosses the training set and whose fan-out is non-zero "
        "(column checked)",
        "conclusion_3 leaves out dead students (output zero on every training sample) and constant ones (output "
        "constant on the training set, e.g. zero fan-in weight with a positive bias: an extra output bias): their "
        "fan-out changes f by at most a constant",
    ]
    if depth > 2:
        notes.append(
            "conclusion_3 is claimed for two-layer nets only; it is null "
            "here (lowest-layer fan-outs are still in the students table)"
        )
    return notes


def converge(
    cfg: Config | None,
    student: Net,
    teacher: Net,
    x: Tensor,
    *,
    y: Tensor | None = None,
    objective: str | None = None,
    options: ConvergeOptions | None = None,
) -> ConvergeResult:
    """Minimize each seed's full-batch loss from `student` until the max per-sample gradient < options.tol.

    x [S, N, d] is the fixed training set; y its teacher labels (recomputed from `teacher` in
    float64 when None). Works on float64 CPU copies; `student` is not modified. `cfg` only
    supplies the seed labels (positions 0..S-1 without it). `objective`: "half_sse" or "mse"
    (None: cfg.train.loss where it is one of them, else half_sse). The settings are `options`'
    (None: ConvergeOptions()): `max_iter` counts LBFGS iterations or Newton steps per seed (None:
    DEFAULT_MAX_ITER[method]); with max_iter=0 it only checks the given point. Students are
    "aligned" and teachers "specialized" at an angle below `angle_tol` degrees; conclusion 3 uses
    the fan-out threshold `fanout_tol`, or `fanout_rtol` times the seed's largest student fan-out
    norm. A student is "constant" when the standard deviation of its output over the training set
    is at most `flat_rtol` times the seed's largest. `check_every`: LBFGS iterations between
    restarts/checks. At each seed's end point the Hessian spectrum of the objective
    (hessian.spectrum): exact up to `hessian_exact_max` parameters, else the `hessian_k` extremes
    at each end by Lanczos; near zero means |lambda| <= `hessian_tol_rel` * max|lambda|.
    """
    options = ConvergeOptions() if options is None else options
    if objective is None:
        objective = cfg.train.loss if cfg is not None and cfg.train.loss in OBJECTIVES else "half_sse"
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective: converge minimizes one of {', '.join(OBJECTIVES)}, got {objective!r}")
    _check_nets(student, teacher)
    method, max_iter = _method(options, sum(p[0].numel() for p in student.parameters()))
    start = time.perf_counter()
    teacher, student64, x, y, seeds = _problem_data(cfg, student, teacher, x, y)
    runs, finals, spectra = [], [], []
    # Hessian columns per vmapped chunk: bounds the exact build's memory to ~CHUNK_ELEMENTS activations
    chunk = max(
        1, hess.CHUNK_ELEMENTS // (x.shape[1] * (x.shape[2] + sum(student64.widths) + student64.weights[-1].shape[2]))
    )
    for s in range(student64.n_seeds):
        one = student64.select([s])
        p = _Problem(one, x[s], y[s], objective)
        run, theta, spectrum = _solve(p, p.flatten(one), method, max_iter, options, chunk)
        runs.append({"seed": seeds[s], **run})
        finals.append([t.detach().clone() for t in p.unflatten(theta)])
        spectra.append(spectrum)
    params = [torch.stack([f[i] for f in finals]) for i in range(len(finals[0]))]
    out = Net(params[0::2], params[1::2], student64.activation, student64.slope)
    teachers, students, concl = _tables(teacher, out, x, seeds, options)
    per_seed = []
    for r, c, h in zip(runs, concl, spectra, strict=True):
        conclusions = {"conclusion_2": c.pop("conclusion_2"), "conclusion_3": c.pop("conclusion_3")}
        per_seed.append(SeedConvergence(**r, conclusions=conclusions, **c, hessian=h.summary()))
    return ConvergeResult(
        method=method,
        tol=float(options.tol),
        max_iter=max_iter,
        angle_tol=float(options.angle_tol),
        fanout_rtol=float(options.fanout_rtol),
        fanout_tol=options.fanout_tol,
        flat_rtol=float(options.flat_rtol),
        per_seed=per_seed,
        teachers=teachers,
        students=students,
        student=out,
        depth=len(student64.weights),
        wall_time=time.perf_counter() - start,
        notes=_notes(len(student64.weights)),
        objective=objective,
        spectra=spectra,
        hessian_exact_max=options.hessian_exact_max,
        hessian_k=options.hessian_k,
        hessian_tol_rel=float(options.hessian_tol_rel),
    )


# ---------------------------------------------------------------------------- stored runs


def _stored_net(arrays: dict[str, np.ndarray], prefix: str, depth: int, cfg: Config, path: Path) -> Net:
    try:
        ws = [torch.as_tensor(arrays[f"{prefix}.W{l}"], dtype=torch.float64) for l in range(1, depth + 1)]
        bs = [torch.as_tensor(arrays[f"{prefix}.b{l}"], dtype=torch.float64) for l in range(1, depth + 1)]
    except KeyError as err:
        raise StoreError(f"{path / 'weights.npz'}: array {err.args[0]!r} missing") from None
    return Net(ws, bs, cfg.teacher.activation, cfg.teacher.leaky_slope)


CONVERGE_FILES = ("converge_teachers.parquet", "converge_students.parquet", "converge_hessian.parquet", "converge.json")


def converge_run(run_dir: str | Path, options: ConvergeOptions | None = None) -> ConvergeResult:
    """Converge a stored run's final students; write
    converge.json and converge_{teachers,students,hessian}.parquet into it.

    The teacher and training set are rebuilt from config.yaml with build() (they depend only on
    the config and seeds) and checked against the stored teacher; the final student weights
    come from weights.npz. Each file is written to a temporary name in run_dir and renamed
    only once all four are written (converge.json last). `options` as in converge() (None: the defaults).
    """
    run = load_run(run_dir)
    cfg, path = run.config, Path(run.path)
    check_files(path, CONVERGE_FILES)  # before any work: never over files studentspec has no record of writing
    if cfg.teacher.batchnorm != "none":
        raise ConfigError("converge supports nets without BatchNorm")
    if cfg.data.kind == "online":
        raise ConfigError("converge needs a fixed training set (data.kind=online has none)")
    notes = []
    if cfg.data.regenerate:
        notes.append("data.regenerate=true: converged on the first epoch's training set")
    if cfg.train.loss not in OBJECTIVES:
        notes.append(
            "the run was trained with "
            f"train.loss={cfg.train.loss}; converge minimizes J = 1/2 mean_x ||f*(x) - f(x)||^2"
        )
    arrays = run.weights()
    depth = len(cfg.teacher.widths) + 1
    stored_teacher = _stored_net(arrays, "teacher", depth, cfg, path)
    student = _stored_net(arrays, "student", depth, cfg, path)
    S = len(cfg.seeds)
    dims = [cfg.input_dim, *cfg.student_widths, cfg.output_dim]
    for l in range(depth):
        for name, got, want in (
            (f"student.W{l + 1}", student.weights[l].shape, (S, dims[l], dims[l + 1])),
            (f"student.b{l + 1}", student.biases[l].shape, (S, dims[l + 1])),
        ):
            if tuple(got) != want:
                raise StoreError(
                    f"{path / 'weights.npz'}: {name} has shape {list(got)}, config.yaml implies {list(want)}"
                )
    setup = build(cfg)
    teacher = setup.teacher
    for l in range(depth):
        for name, a, b in (
            (f"W{l + 1}", stored_teacher.weights[l], teacher.weights[l]),
            (f"b{l + 1}", stored_teacher.biases[l], teacher.biases[l]),
        ):
            if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-12, atol=1e-12):
                raise StoreError(
                    f"{path / 'weights.npz'}: teacher.{name} differs from the teacher rebuilt from config.yaml"
                )
    x = setup.stream.x_train.to("cpu", torch.float64)
    per_seed = run.summary.get("per_seed", {})
    diverged = [s for s in cfg.seeds if (per_seed.get(str(s)) or {}).get("diverged_at_step") is not None]
    if diverged:
        keep = [i for i, s in enumerate(cfg.seeds) if s not in diverged]
        if not keep:
            raise ConfigError(f"converge: every seed of {path} diverged during training; nothing to converge")
        notes.append(f"seeds {diverged} diverged during training and are skipped")
        student, teacher, x = student.select(keep), teacher.select(keep), x[keep]
        cfg = cfg.model_copy(update={"seeds": [cfg.seeds[i] for i in keep]})
    result = converge(cfg, student, teacher, x, options=options)
    result.notes += notes
    teachers, students = result.to_frames()
    spectrum = result.hessian_frame()
    info = result.to_json() | {"run": str(path), "n_train": int(x.shape[1]), "seeds": list(cfg.seeds)}
    files = {
        "converge_teachers.parquet": lambda p: teachers.to_parquet(p, index=False),
        "converge_students.parquet": lambda p: students.to_parquet(p, index=False),
        "converge_hessian.parquet": lambda p: spectrum.to_parquet(p, index=False),
        "converge.json": lambda p: p.write_text(json.dumps(strict_json(info), indent=1, allow_nan=False)),
    }
    claim_files(path, files)  # recorded in the run dir's marker before they are written
    write_all(path, files)
    return result
