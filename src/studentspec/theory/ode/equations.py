"""The right-hand side of the online-learning ODEs, vectorized over seeds and every index tuple.

Units: N = K + M pre-activations u = (z_1..z_K, z*_1..z*_M) with covariance Cov = [[Q, R], [R^T, T]] [S, N, N].
With the signed fan-outs Vs = [-V; V*] [S, N, C] (so f* - f = Vs^T g(u)) and c = V Vs^T [S, K, N]
(c_ia = v_i . (signed fan-out of unit a): A = V V*^T on teachers, -B = -V V^T on students):

    X[i, b]  = sum_a c_ia I3(i, b, a)                         (first-order drift of student i along unit b)
    dR/dt    = eta X[:, K:]                                    dQ/dt = eta (X[:, :K] + X[:, :K]^T) + eta^2 / B Y
    Y[i, k]  = sum_{a,b} c_ia c_kb I4(i, k, a, b) = E[g'(u_i) g'(u_k) (v_i . D)(v_k . D)],  D = f* - f
    dV/dt    = eta_v I2[:K, :] Vs                              J = 1/2 sum_{a,b} (Vs Vs^T)_ab I2(a, b)
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import fast
from .integrals import Array, Integrals, sym_sqrt


def covariance(Q: Array, R: Array, T: Array) -> Array:
    """[[Q, R], [R^T, T]] [S, K+M, K+M]."""
    top = np.concatenate([Q, R], axis=-1)
    bottom = np.concatenate([np.swapaxes(R, -1, -2), T], axis=-1)
    return np.concatenate([top, bottom], axis=-2)


def signed_fanout(V: Array, Vt: Array) -> Array:
    """[-V; V*] [S, K+M, C]: f* - f = sum_a Vs_a g(u_a)."""
    return np.concatenate([-V, Vt], axis=-2)


def i2_matrix(ig: Integrals, cov: Array) -> Array:
    """I2(a, b) for every pair of units, [S, N, N]."""
    d = np.diagonal(cov, axis1=-2, axis2=-1)
    return ig.i2(d[..., :, None], cov, d[..., None, :])


def i3_tensor(ig: Integrals, cov: Array, K: int) -> Array:
    """I3(i, b, a) for students i and all units b, a, [S, K, N, N] (tests; the equations use drift)."""
    d = np.diagonal(cov, axis1=-2, axis2=-1)
    return ig.i3(
        d[:, :K, None, None], cov[:, :K, :, None], cov[:, :K, None, :], cov[:, None, :, :], d[:, None, None, :]
    )


def drift(ig: Integrals, cov: Array, c: Array) -> Array:
    """X[i, b] = sum_a c_ia I3(i, b, a) [S, K, N]: with I3 = p_ia C_ab + q_ia C_ib a matrix product."""
    K = c.shape[1]
    d = np.diagonal(cov, axis1=-2, axis2=-1)
    p, q = ig.i3_parts(d[:, :K, None], cov[:, :K, :], d[:, None, :])
    return (c * p) @ cov + cov[:, :K, :] * (c * q).sum(axis=-1, keepdims=True)


def population_j(ig: Integrals, cov: Array, Vs: Array) -> Array:
    """J = 1/2 E||f* - f||^2 [S] (half_sse)."""
    return 0.5 * np.einsum("sac,sbc,sab->s", Vs, Vs, i2_matrix(ig, cov))


def second_order_closed(ig: Integrals, cov: Array, c: Array) -> Array:
    """Y[i, k] = sum_{a,b} c_ia c_kb I4(i, k, a, b) [S, K, K] for erf and linear (closed forms)."""
    if ig.activation == "linear":
        return c @ cov @ np.swapaxes(c, -1, -2)
    compiled = fast.erf_second_order(cov, c)  # the same sum in one compiled loop, when numba is installed
    if compiled is not None:
        return compiled
    return second_order_erf_numpy(cov, c)


def second_order_erf_numpy(cov: Array, c: Array) -> Array:
    """Y of erf in numpy (the fallback without numba, and its oracle in the tests)."""
    K = c.shape[1]
    # erf: Saad & Solla's I4 at covariance 2 Cov (u-units), times 2. Y is symmetric in (i, k): only the P = K (K+1) / 2
    # pairs i <= k are computed. Layout [S, a, b, P]: the pair index is innermost, so every broadcast product runs
    # contiguous loops of length P (a trailing axis of length 1 made numpy loop element by element, 10x slower).
    iu, ku = _pairs(K)
    C = 2.0 * cov
    e = 1.0 + np.diagonal(C, axis1=-2, axis2=-1)  # 1 + C_aa [S, N]
    e11, e22, c12 = e[:, None, iu], e[:, None, ku], C[:, None, iu, ku]  # [S, 1, P]
    c13, c23 = C[:, :, iu], C[:, :, ku]  # C_ia, C_ka [S, N, P]
    l4 = e11 * e22 - c12 * c12
    # L0 = L4 C_ab + X_a C_kb + Y_a C_ib (products of an a-factor and a b-factor); L2 is L1 with a <-> b
    xa = c12 * c13 - e11 * c23
    ya = c12 * c23 - e22 * c13
    l1 = l4 * e[:, :, None] - c23 * c23 * e11 - c13 * c13 * e22 + 2.0 * c12 * c13 * c23
    r = 1.0 / np.sqrt(l1)  # [S, N, P]
    # L0 / sqrt(L1 L2): the a-factors scaled by 1 / sqrt(L1_a) before the outer products, 1 / sqrt(L2_b) once after
    ratio = (l4 * r)[:, :, None, :] * C[:, :, :, None]
    ratio += (xa * r)[:, :, None, :] * c23[:, None, :, :]
    ratio += (ya * r)[:, :, None, :] * c13[:, None, :, :]
    ratio *= r[:, None, :, :]
    np.clip(ratio, -1.0, 1.0, out=ratio)
    i4 = np.arcsin(ratio, out=ratio)  # [S, N, N, P]
    ca, cb = np.swapaxes(c[:, iu, :], 1, 2), np.swapaxes(c[:, ku, :], 1, 2)  # c_ia, c_kb [S, N, P]
    y = (np.einsum("sabp,sbp->sap", i4, cb) * ca).sum(axis=1)
    y *= 2.0 * (4.0 / math.pi**2) / np.sqrt(l4[:, 0, :])
    out = np.empty((c.shape[0], K, K))
    out[:, iu, ku] = y
    out[:, ku, iu] = y
    return out


@functools.cache
def _pairs(K: int) -> tuple[Array, Array]:
    """The index pairs i <= k of K students."""
    return np.triu_indices(K)


def second_order_mc(ig: Integrals, cov: Array, c: Array, z: Array) -> tuple[Array, Array]:
    """Y [S, K, K] as the mean over fixed draws z [n, N] of g'(u_i) g'(u_k) (v_i . D)(v_k . D), u = z Cov^(1/2),
    and its standard error [S, K, K]."""
    K = c.shape[1]
    n = z.shape[0]
    u = z @ sym_sqrt(cov)  # [S, n, N] (the root is symmetric)
    vd = ig.g(u) @ np.swapaxes(c, -1, -2)  # v_i . D per draw [S, n, K]
    G = ig.dg(u[..., :K]) * vd
    Gt = np.swapaxes(G, -1, -2)
    y = Gt @ G / n
    G2 = G * G
    var = np.swapaxes(G2, -1, -2) @ G2 / n - y * y
    return y, np.sqrt(np.maximum(var, 0.0) / max(n - 1, 1))


def derivatives(
    ig: Integrals,
    Q: Array,
    R: Array,
    V: Array,
    T: Array,
    Vt: Array,
    *,
    eta: float,
    eta_v: float,
    train_first: bool,
    batch: int,
    z: Array | None,
) -> tuple[Array, Array, Array, Array | None]:
    """dQ/dt, dR/dt, dV/dt and the standard error of dQ/dt's Monte Carlo part (None without one)."""
    K = Q.shape[-1]
    cov = covariance(Q, R, T)
    Vs = signed_fanout(V, Vt)
    se = None
    if train_first:
        c = V @ np.swapaxes(Vs, -1, -2)  # [S, K, N]
        X = drift(ig, cov, c)
        dR = eta * X[:, :, K:]
        XQ = X[:, :, :K]
        dQ = eta * (XQ + np.swapaxes(XQ, -1, -2))
        if eta != 0.0:
            if z is None:
                y = second_order_closed(ig, cov, c)
            else:
                y, se = second_order_mc(ig, cov, c, z)
                se = se * (eta * eta / batch)
            dQ = dQ + (eta * eta / batch) * y
    else:
        dQ, dR = np.zeros_like(Q), np.zeros_like(R)
    if eta_v != 0.0:
        i2 = i2_matrix(ig, cov)
        dV = eta_v * (i2[:, :K, :] @ Vs)
    else:
        dV = np.zeros_like(V)
    return dQ, dR, dV, se
