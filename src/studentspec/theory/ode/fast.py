"""The erf second-order term compiled with numba, when numba is installed (the optional extra `fast`).

The numpy form (`equations.second_order_closed`) spends its time in numpy's per-call and broadcasting overheads
(about 40 array operations on [S, N, N, P] tensors per right-hand side); one compiled loop over (i <= k, a <= b)
evaluates each distinct arcsin once (I4 is symmetric in its last two arguments). It gives the numpy form's numbers
to rounding (tests/test_ode.py) and is used when numba imports, unless STUDENTSPEC_ODE_NUMBA=0 (A/B benchmarks).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

_kernel: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
_tried = False


def available() -> bool:
    """Whether the compiled kernel runs (numba imports and STUDENTSPEC_ODE_NUMBA is not 0)."""
    return _get() is not None


def erf_second_order(cov: np.ndarray, c: np.ndarray) -> np.ndarray | None:
    """Y [S, K, K] of erf (as equations.second_order_closed), or None without numba."""
    kernel = _get()
    if kernel is None:
        return None
    return kernel(np.ascontiguousarray(cov, dtype=np.float64), np.ascontiguousarray(c, dtype=np.float64))


def _get() -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    global _kernel, _tried
    if os.environ.get("STUDENTSPEC_ODE_NUMBA", "1") == "0":
        return None
    if not _tried:
        _tried = True
        try:
            import numba  # an optional dependency: imported (and the kernel compiled) on first use only
        except ImportError:
            return None
        _kernel = numba.njit(cache=True)(_erf_second_order_loops)
    return _kernel


def _erf_second_order_loops(cov: Any, c: Any) -> Any:
    """Saad & Solla's I4 at covariance 2 cov (times 2: two g' = sqrt 2 G'), contracted with c over (a, b)."""
    S, K, N = c.shape
    out = np.empty((S, K, K))
    r = np.empty(N)
    xa = np.empty(N)
    ya = np.empty(N)
    for s in range(S):
        C = 2.0 * cov[s]
        for i in range(K):
            for k in range(i, K):
                e11 = 1.0 + C[i, i]
                e22 = 1.0 + C[k, k]
                c12 = C[i, k]
                l4 = e11 * e22 - c12 * c12
                for a in range(N):
                    c13 = C[i, a]
                    c23 = C[k, a]
                    l1 = l4 * (1.0 + C[a, a]) - c23 * c23 * e11 - c13 * c13 * e22 + 2.0 * c12 * c13 * c23
                    r[a] = 1.0 / math.sqrt(l1)
                    xa[a] = c12 * c13 - e11 * c23  # L0(a, b) = L4 C_ab + X_a C_kb + Y_a C_ib
                    ya[a] = c12 * c23 - e22 * c13
                acc = 0.0
                for a in range(N):
                    for b in range(a, N):
                        x = (l4 * C[a, b] + xa[a] * C[k, b] + ya[a] * C[i, b]) * r[a] * r[b]
                        v = math.asin(min(1.0, max(-1.0, x)))
                        if b == a:
                            acc += c[s, i, a] * c[s, k, a] * v
                        else:  # I4(i, k, a, b) = I4(i, k, b, a)
                            acc += (c[s, i, a] * c[s, k, b] + c[s, i, b] * c[s, k, a]) * v
                y = acc * (8.0 / math.pi**2) / math.sqrt(l4)
                out[s, i, k] = y
                out[s, k, i] = y
    return out
