"""Fixed-step integration of the online-learning ODEs (Euler, as Goldt et al.'s and nn2pp's codes; or RK4)."""

from __future__ import annotations

import sys
import time

import numpy as np

from .equations import covariance, derivatives, population_j, signed_fanout
from .integrals import Integrals, draws
from .state import OdeSettings, OdeSolution, OdeState

DEFAULT_POINTS = 200


def integrals_of(s: OdeSettings) -> Integrals:
    """The integrals of the settings' activation."""
    return Integrals(s.activation, s.slope if s.activation == "leaky_relu" else 0.0)


def population_J(state: OdeState, s: OdeSettings) -> np.ndarray:  # noqa: N802 (the theory's name)
    """J = 1/2 E||f* - f||^2 of every seed [S] (half_sse; the mse objective is (2/C) J)."""
    return population_j(integrals_of(s), covariance(state.Q, state.R, state.T), signed_fanout(state.V, state.Vt))


def cosines(R: np.ndarray, Q: np.ndarray, T: np.ndarray) -> np.ndarray:
    """R_km / sqrt(Q_kk T_mm) [..., K, M] (0 where a norm is 0)."""
    q = np.diagonal(Q, axis1=-2, axis2=-1)[..., :, None]
    t = np.diagonal(T, axis1=-2, axis2=-1)[..., None, :]
    norm = np.sqrt(q * t)
    return np.where(norm > 0, R / np.where(norm > 0, norm, 1.0), 0.0)


def default_times(t_end: float, dt: float, points: int = DEFAULT_POINTS) -> np.ndarray:
    """0 and points-1 log-spaced times from dt to t_end (loss curves are read on log axes), distinct."""
    if t_end <= dt:
        return np.array([0.0, t_end]) if t_end > 0 else np.array([0.0])
    return np.unique(np.concatenate([[0.0], np.geomspace(dt, t_end, points - 1)]))


def solve(
    state: OdeState,
    s: OdeSettings,
    *,
    t_end: float,
    t_eval: np.ndarray | None = None,
    progress: bool = False,
) -> OdeSolution:
    """Integrate from `state` at t = 0 to t_end with steps of s.dt (a step is shortened to land on each t_eval)."""
    start = time.perf_counter()
    if not t_end >= 0:
        raise ValueError(f"t_end must be >= 0, got {t_end}")
    times = default_times(t_end, s.dt) if t_eval is None else np.asarray(t_eval, dtype=np.float64)
    if times.ndim != 1 or np.any(np.diff(times) <= 0) or times[0] < 0 or times[-1] > t_end * (1 + 1e-12):
        raise ValueError("t_eval must increase strictly within [0, t_end]")
    ig = integrals_of(s)
    K, M = state.R.shape[1:]
    mc = not ig.closed_i4 and s.train_first and s.eta != 0.0
    z = draws(s.mc_samples, K + M, s.mc_seed) if mc else None
    Q, R, V = (np.array(a, dtype=np.float64) for a in (state.Q, state.R, state.V))
    T, Vt = np.asarray(state.T, dtype=np.float64), np.asarray(state.Vt, dtype=np.float64)
    err = np.zeros_like(Q)  # accumulated standard error of Q's Monte Carlo part
    out_q, out_r, out_v, out_e = [], [], [], []
    t = 0.0
    next_report = 0.1

    def f(q: np.ndarray, r: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        return derivatives(ig, q, r, v, T, Vt, eta=s.eta, eta_v=s.eta_v, train_first=s.train_first, batch=s.batch, z=z)

    for target in times:
        while target - t > 1e-9 * s.dt:  # a smaller gap is rounding of the summed steps
            h = min(s.dt, target - t)
            dq, dr, dv, se = f(Q, R, V)
            if s.method == "euler":
                Q, R, V = Q + h * dq, R + h * dr, V + h * dv
            else:
                q2, r2, v2, _ = f(Q + 0.5 * h * dq, R + 0.5 * h * dr, V + 0.5 * h * dv)
                q3, r3, v3, _ = f(Q + 0.5 * h * q2, R + 0.5 * h * r2, V + 0.5 * h * v2)
                q4, r4, v4, _ = f(Q + h * q3, R + h * r3, V + h * v3)
                Q = Q + (h / 6.0) * (dq + 2 * q2 + 2 * q3 + q4)
                R = R + (h / 6.0) * (dr + 2 * r2 + 2 * r3 + r4)
                V = V + (h / 6.0) * (dv + 2 * v2 + 2 * v3 + v4)
            if se is not None:
                err = err + h * se
            t = t + h
            if progress and t_end > 0 and t / t_end >= next_report:
                print(f"ode: t = {t:.4g} / {t_end:.4g}", file=sys.stderr)
                next_report += 0.1
        t = float(target)
        out_q.append(Q)
        out_r.append(R)
        out_v.append(V)
        out_e.append(err.max(axis=(-1, -2)))
    Qs, Rs, Vs = np.stack(out_q), np.stack(out_r), np.stack(out_v)
    n, S = Qs.shape[:2]
    cov = covariance(
        Qs.reshape(n * S, K, K), Rs.reshape(n * S, K, M), np.broadcast_to(T, (n, *T.shape)).reshape(n * S, M, M)
    )
    vs = signed_fanout(Vs.reshape(n * S, K, -1), np.broadcast_to(Vt, (n, *Vt.shape)).reshape(n * S, M, -1))
    J = population_j(ig, cov, vs).reshape(n, S)
    return OdeSolution(
        t=times.copy(),
        Q=Qs,
        R=Rs,
        V=Vs,
        T=T.copy(),
        Vt=Vt.copy(),
        J=J,
        mc_error=np.stack(out_e),
        seconds=time.perf_counter() - start,
    )
