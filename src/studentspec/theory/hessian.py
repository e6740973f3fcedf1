"""The spectrum of a full-batch Hessian at a point: exact for small parameter vectors, Lanczos extremes above.

`converge` calls `spectrum(loss, theta)` per seed at its end point, with `loss` the run's training
objective on the full training set as a function of the seed's flat parameter vector theta
(W_1, b_1, ..., W_L, b_L). For a piecewise-linear activation the loss is piecewise polynomial in
theta; autograd differentiates the piece of the current gate pattern, so this is the Hessian
within the pattern (the exact one when no training sample sits on a student's boundary).

- exact (n_params <= exact_max): the dense P x P Hessian by reverse-over-reverse autograd
  (torch.func.jacrev twice, in chunks of Hessian columns to bound memory), symmetrized, and
  all P eigenvalues by torch.linalg.eigvalsh;
- lanczos (n_params > exact_max): the k largest and k smallest algebraic eigenvalues by
  scipy.sparse.linalg.eigsh (implicitly restarted Lanczos) on a LinearOperator whose matvec is
  a Hessian-vector product by double backward. The smallest end is computed as the largest end
  of (s I - H), s = the largest |eigenvalue| found, so ARPACK's relative stopping rule is
  relative to the spectrum's scale and not to the (near-zero) eigenvalues sought.

Lanczos and multiplicity: a single-vector Krylov method finds every DISTINCT extreme eigenvalue
but not how often a degenerate one repeats. At a critical point the bottom of the spectrum is a
degenerate zero (one rescaling direction per hidden node, every direction of a dead node, split
nodes): on a 133-parameter net with 28 exact zeros, eigsh returns 2 zeros and then the next
distinct eigenvalues 1.0e-4, 5.0e-4, ... (each equal to the exact ones to 1e-12).
Each end gets at most LANCZOS_MAX_PRODUCTS Hessian-vector products; past that only the converged
eigenvalues are kept (`converged` false, with a note): on students of thousands of parameters the top
end converges within a few dozen products and the bottom end, crowded by the near-zero cluster, often
does not (BENCHMARKS.md has the figures). So with lanczos, min and max eigenvalue are right where their end
converged, the i-th smallest value returned is >= the true i-th smallest (Cauchy interlacing), and the near-zero
and negative counts are lower bounds.

Counts: an eigenvalue is near zero when |lambda| <= tol_rel * max|lambda| and negative when
lambda < -tol_rel * max|lambda|. For lanczos the counts are over the 2k computed eigenvalues
only (lower bounds of the true counts).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..config import ConfigError

EXACT_MAX = 3000  # dense Hessian and eigvalsh up to this many parameters per seed (NEWTON_MAX_PARAMS builds 4000)
LANCZOS_K = 10  # eigenvalues at each end of the spectrum above EXACT_MAX
TOL_REL = 1e-6  # near zero: |lambda| <= TOL_REL * max|lambda| (float64 rounding of an exact zero is ~1e-14 relative)
LANCZOS_MAX_PRODUCTS = 2000  # Hessian-vector products per end before ARPACK gives up (keeping what converged)
CHUNK_ELEMENTS = 2**25  # Hessian columns per vmapped chunk: about this many float64 activations (256 MiB) at once
METHODS = ("exact", "lanczos", "skipped")


@dataclass
class HessianSpectrum:
    """One seed's Hessian eigenvalues (ascending) and how they were obtained."""

    n_params: int
    method: str  # exact | lanczos | skipped (non-finite loss or Hessian)
    eigenvalues: np.ndarray  # exact: all P; lanczos: the k smallest then the k largest; skipped: empty
    index: np.ndarray  # position of each eigenvalue in the full ascending spectrum 0..P-1
    tol_rel: float
    converged: bool = True  # lanczos: ARPACK converged at both ends
    wall_time: float = 0.0
    note: str = ""

    @property
    def tol(self) -> float:
        """The absolute near-zero threshold tol_rel * max|lambda| (nan when no eigenvalues)."""
        return self.tol_rel * float(np.abs(self.eigenvalues).max()) if len(self.eigenvalues) else math.nan

    def summary(self) -> dict[str, object]:
        """n_params, method, min/max eigenvalue, near-zero and negative counts: converge.json's per-seed entry."""
        lam, tol = self.eigenvalues, self.tol
        have = len(lam) > 0
        # lanczos: the bottom (top) end alone says the min (max); an end where nothing converged says nothing
        low, top = lam[self.index < self.n_params / 2], lam[self.index >= self.n_params / 2]
        return {
            "n_params": self.n_params,
            "method": self.method,
            "n_eigenvalues": int(len(lam)),
            "min_eigenvalue": float(low.min()) if len(low) else None,
            "max_eigenvalue": float(top.max()) if len(top) else None,
            "zero_tol": tol if have else None,
            "n_near_zero": int((np.abs(lam) <= tol).sum()) if have else None,
            "n_negative": int((lam < -tol).sum()) if have else None,
            "converged": self.converged,
            "wall_time_s": round(self.wall_time, 3),
            "note": self.note,
        }


def check_args(exact_max: int, k: int, tol_rel: float) -> None:
    """ConfigError (one line, naming the option) for an out-of-range Hessian option."""
    if isinstance(exact_max, bool) or not isinstance(exact_max, int) or exact_max < 0:
        raise ConfigError(f"hessian_exact_max: must be an integer >= 0 (got {exact_max!r})")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"hessian_k: must be an integer >= 1 (got {k!r})")
    if isinstance(tol_rel, bool) or not (isinstance(tol_rel, (int, float)) and 0 <= tol_rel < 1):
        raise ConfigError(f"hessian_tol_rel: must lie in [0, 1) (got {tol_rel!r})")


def hessian(loss: Callable[[Tensor], Tensor], theta: Tensor, chunk_size: int | None = None) -> Tensor:
    """The dense Hessian [P, P] of the scalar loss(theta) by reverse-over-reverse autograd, symmetrized."""
    theta = theta.detach()
    H = torch.func.jacrev(torch.func.jacrev(loss), chunk_size=chunk_size)(theta)
    return (H + H.T) / 2  # equal up to rounding; eigvalsh reads one triangle


def hvp_operator(loss: Callable[[Tensor], Tensor], theta: Tensor) -> Callable[[np.ndarray], np.ndarray]:
    """v -> H v by double backward through one retained gradient graph (float64 NumPy in and out)."""
    param = theta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(param), param, create_graph=True)

    def matvec(v: np.ndarray) -> np.ndarray:
        u = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(-1), dtype=param.dtype, device=param.device)
        (hv,) = torch.autograd.grad(g, param, grad_outputs=u, retain_graph=True)
        return hv.detach().cpu().numpy().astype(np.float64)

    return matvec


def _lanczos(matvec: Callable[[np.ndarray], np.ndarray], P: int, k: int) -> tuple[np.ndarray, np.ndarray, bool]:
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    v0 = np.random.default_rng(0).standard_normal(P)  # fixed start: the same run gives the same numbers
    ncv = min(P, max(2 * k + 1, 40))  # 40 Lanczos vectors: about 1000-2500 products at the degenerate bottom end
    converged = True

    def extremes(op: LinearOperator) -> np.ndarray:
        nonlocal converged
        try:
            # maxiter counts restarts of about ncv - k products each: the bottom end of a big net converges slowly
            # (clusters near 0 that are 1e-5 of the spectrum's width apart), so each end gets a product budget
            return np.sort(
                eigsh(
                    op,
                    k=k,
                    which="LA",
                    v0=v0,
                    ncv=ncv,
                    tol=1e-10,
                    maxiter=max(1, LANCZOS_MAX_PRODUCTS // (ncv - k)),
                    return_eigenvectors=False,
                )
            )
        except ArpackNoConvergence as err:  # keep what converged
            converged = False
            return np.sort(np.asarray(err.eigenvalues, dtype=np.float64))

    top = extremes(LinearOperator((P, P), matvec=matvec, dtype=np.float64))
    shift = float(np.abs(top).max()) if len(top) else 1.0
    # largest of (s I - H) = s - smallest of H: ARPACK's relative tolerance now refers to the spectrum's scale
    low = shift - extremes(
        LinearOperator((P, P), matvec=lambda v: shift * np.asarray(v).reshape(-1) - matvec(v), dtype=np.float64)
    )
    low = np.sort(low)
    lam = np.concatenate([low, top])
    index = np.concatenate([np.arange(len(low)), np.arange(P - len(top), P)])
    return lam, index, converged


def _skipped(P: int, tol_rel: float, start: float, note: str) -> HessianSpectrum:
    """The spectrum of an end point where it cannot be computed: no eigenvalues, the reason in `note`."""
    empty = np.zeros(0)
    return HessianSpectrum(
        P, "skipped", empty, empty.astype(np.int64), tol_rel, False, time.perf_counter() - start, note
    )


def spectrum(
    loss: Callable[[Tensor], Tensor],
    theta: Tensor,
    *,
    exact_max: int = EXACT_MAX,
    k: int = LANCZOS_K,
    tol_rel: float = TOL_REL,
    chunk_size: int | None = None,
) -> HessianSpectrum:
    """Hessian eigenvalues of loss at theta: all of them (P <= exact_max) or the k extremes at each end by Lanczos.

    A non-finite loss or Hessian gives method "skipped" with no eigenvalues. `chunk_size`:
    Hessian columns per vmapped chunk of the exact build (None: all at once).
    """
    check_args(exact_max, k, tol_rel)
    start = time.perf_counter()
    P = int(theta.numel())
    with torch.no_grad():
        value = float(loss(theta.detach()))
    if not (math.isfinite(value) and bool(torch.isfinite(theta).all())):
        return _skipped(P, tol_rel, start, "the loss is not finite at the end point")
    if P <= exact_max or 2 * k >= P:  # Lanczos needs k < P at each end and should not overlap
        H = hessian(loss, theta, chunk_size)
        if not bool(torch.isfinite(H).all()):
            return _skipped(P, tol_rel, start, "the Hessian is not finite at the end point")
        lam = torch.linalg.eigvalsh(H).cpu().numpy()
        return HessianSpectrum(P, "exact", lam, np.arange(P), tol_rel, True, time.perf_counter() - start)
    lam, index, converged = _lanczos(hvp_operator(loss, theta), P, k)
    if not np.isfinite(lam).all():
        return _skipped(P, tol_rel, start, "a Hessian-vector product is not finite at the end point")
    note = "" if converged else "ARPACK did not converge at every end: only the converged eigenvalues are kept"
    return HessianSpectrum(P, "lanczos", lam, index, tol_rel, converged, time.perf_counter() - start, note)
