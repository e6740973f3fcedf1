"""Gaussian integrals of the online-learning ODEs: I2, I3, I4, J2 of one activation, vectorized.

u is a zero-mean Gaussian vector whose covariance C is taken from the order parameters
[[Q, R], [R^T, T]] at the listed indices (docs/theory.md, "Online-learning ODEs"):

    I2(a, b)       = E[g(u_a) g(u_b)]                 J2(a, b) = E[g'(u_a) g'(u_b)]
    I3(a, b, c)    = E[g'(u_a) u_b g(u_c)]            I4(a, b, c, d) = E[g'(u_a) g'(u_b) g(u_c) g(u_d)]

Closed forms: erf (g(z) = erf(z), Saad & Solla's formulas for erf(u / sqrt 2) at covariance 2C: I2, I3 as they
are, I4 and J2 times 2 for the two g' = sqrt 2 G'), linear (I2 = C12, I3 = C23, I4 = C34, J2 = 1), and for ReLU and
Leaky ReLU, written g = alpha z + beta |z| (alpha = (1 + a) / 2, beta = (1 - a) / 2), I2, I3 and J2 from the ReLU
ones (the terms odd in u vanish). I4 of (Leaky) ReLU has no elementary form: `second_order_mc` estimates the
contraction the equations need on fixed Gaussian draws.

Every function takes covariance entries (numpy float64, broadcasting) or, for the `Integrals` methods, covariance
matrices [..., n, n] of the n listed arguments. Near-singular covariances (two nearly parallel weight vectors) are
handled by arctan2 in place of arcsin of a ratio and by clipping square roots at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

Array = np.ndarray
CLOSED_I4 = ("erf", "linear")  # activations whose I4 (and second-order term) is closed form
ACTIVATIONS = ("erf", "relu", "leaky_relu", "linear")


def _sqrt0(x: Array) -> Array:
    """sqrt(max(x, 0)): rounding makes a Gram determinant of parallel vectors slightly negative."""
    return np.sqrt(np.maximum(x, 0.0))


def _asin_ratio(num: Array, den2: Array) -> Array:
    """arcsin(num / sqrt(den2)) without dividing by a vanishing sqrt (arctan2 of the complementary leg)."""
    return np.arctan2(num, _sqrt0(den2 - num * num))


def _safe(x: Array) -> Array:
    """x where it is positive, else 1 (the terms it divides vanish there)."""
    return np.where(x > 0, x, 1.0)


@dataclass(frozen=True)
class Integrals:
    """The integrals of one activation g (a registered name; `slope` is Leaky ReLU's a)."""

    activation: str
    slope: float = 0.0

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} has no ODE integrals (one of {', '.join(ACTIVATIONS)})")

    @property
    def alpha_beta(self) -> tuple[float, float]:
        """g = alpha z + beta |z| for the piecewise-linear activations (linear: 1, 0)."""
        a = {"relu": 0.0, "leaky_relu": self.slope, "linear": 1.0}[self.activation]
        return (1.0 + a) / 2.0, (1.0 - a) / 2.0

    @property
    def closed_i4(self) -> bool:
        """Whether I4 and the second-order term are closed form (else Monte Carlo)."""
        return self.activation in CLOSED_I4

    # ----- entrywise forms ------------------------------------------------------------------------------------
    def i2(self, c11: Array, c12: Array, c22: Array) -> Array:
        """E[g(u1) g(u2)] from the covariance entries."""
        if self.activation == "erf":
            return (2.0 / math.pi) * _asin_ratio(2.0 * c12, (1.0 + 2.0 * c11) * (1.0 + 2.0 * c22))
        al, be = self.alpha_beta
        if be == 0.0:
            return al * al * c12
        # E|u1||u2| = 4 relu_I2 - C12 (relu = (z + |z|) / 2)
        s = _sqrt0(c11 * c22 - c12 * c12)
        relu = (s + c12 * (math.pi / 2.0 + np.arctan2(c12, s))) / (2.0 * math.pi)
        return al * al * c12 + be * be * (4.0 * relu - c12)

    def i3(self, c11: Array, c12: Array, c13: Array, c23: Array, c33: Array) -> Array:
        """E[g'(u1) u2 g(u3)] from the covariance entries."""
        p, q = self.i3_parts(c11, c13, c33)
        return p * c23 + q * c12

    def i3_parts(self, c11: Array, c13: Array, c33: Array) -> tuple[Array, Array]:
        """(p, q) with I3(1, 2, 3) = p C23 + q C12: u2 enters only through its covariances (Stein's lemma), so the
        equations contract I3 over its middle argument as a matrix product."""
        if self.activation == "erf":
            # Saad & Solla at covariance 2C: (2/pi) [C'23 (1 + C'11) - C'12 C'13] / [(1 + C'11) sqrt(L3)]
            d11 = 1.0 + 2.0 * c11
            r = (4.0 / math.pi) / np.sqrt(d11 * (1.0 + 2.0 * c33) - 4.0 * c13 * c13)
            return r, -r * (2.0 * c13 / d11)
        al, be = self.alpha_beta
        if be == 0.0:
            return np.full(np.broadcast(c11, c13, c33).shape, al * al), np.zeros(np.broadcast(c11, c13, c33).shape)
        # ReLU: I3 = C12 sqrt(C11 C33 - C13^2) / (2 pi C11) + C23 (arcsin(C13 / sqrt(C11 C33)) / (2 pi) + 1 / 4);
        # Leaky: alpha^2 C23 + beta^2 (4 relu_I3 - C23), E[sign(u1) u2 |u3|] = 4 relu_I3 - C23
        p_relu = _asin_ratio(c13, c11 * c33) / (2.0 * math.pi) + 0.25
        q_relu = _sqrt0(c11 * c33 - c13 * c13) / (2.0 * math.pi * _safe(c11))
        return al * al + be * be * (4.0 * p_relu - 1.0), 4.0 * be * be * q_relu

    def j2(self, c11: Array, c12: Array, c22: Array) -> Array:
        """E[g'(u1) g'(u2)] from the covariance entries."""
        if self.activation == "erf":
            d = (1.0 + 2.0 * c11) * (1.0 + 2.0 * c22) - 4.0 * c12 * c12
            return 2.0 * (2.0 / math.pi) / np.sqrt(d)
        al, be = self.alpha_beta
        return al * al + be * be * (2.0 / math.pi) * _asin_ratio(c12, c11 * c22) + 0.0 * c12

    def i4(self, c: Array) -> Array:
        """E[g'(u1) g'(u2) g(u3) g(u4)] from covariances c [..., 4, 4] (closed forms only)."""
        if self.activation == "linear":
            return c[..., 2, 3].copy()
        if self.activation != "erf":
            raise ValueError(f"I4 of {self.activation} has no closed form: use second_order_mc")
        d = 2.0 * c
        return 2.0 * _erf_i4_u(*(d[..., i, j] for i, j in _I4_ENTRIES))

    # ----- matrix forms (the covariance of the listed arguments) -----------------------------------------------
    def I2(self, c: Array) -> Array:  # noqa: N802 (the papers' names)
        """I2 of covariances c [..., 2, 2]."""
        return self.i2(c[..., 0, 0], c[..., 0, 1], c[..., 1, 1])

    def I3(self, c: Array) -> Array:  # noqa: N802
        """I3 of covariances c [..., 3, 3]."""
        return self.i3(c[..., 0, 0], c[..., 0, 1], c[..., 0, 2], c[..., 1, 2], c[..., 2, 2])

    def J2(self, c: Array) -> Array:  # noqa: N802
        """J2 of covariances c [..., 2, 2]."""
        return self.j2(c[..., 0, 0], c[..., 0, 1], c[..., 1, 1])

    # ----- g and g' (Monte Carlo) --------------------------------------------------------------------------------
    def g(self, z: Array) -> Array:
        """The activation g(z)."""
        if self.activation == "erf":
            return special.erf(z)
        a = self.alpha_beta[0] - self.alpha_beta[1]  # the slope a: max(z, a z) for 0 <= a <= 1, one pass
        return np.maximum(z, a * z) if a != 1.0 else z.copy()

    def dg(self, z: Array) -> Array:
        """Its derivative g'(z) (at 0 the slope a, ReLU's g'(0) = 0 as the activation registry has it)."""
        if self.activation == "erf":
            return (2.0 / math.sqrt(math.pi)) * np.exp(-z * z)
        a = self.alpha_beta[0] - self.alpha_beta[1]
        return np.where(z > 0, 1.0, a)


# entries (row, col) of the 4x4 covariance in the order _erf_i4_u takes them
_I4_ENTRIES = [(0, 0), (1, 1), (2, 2), (3, 3), (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def _erf_i4_u(
    c11: Array,
    c22: Array,
    c33: Array,
    c44: Array,
    c12: Array,
    c13: Array,
    c14: Array,
    c23: Array,
    c24: Array,
    c34: Array,
) -> Array:
    """Saad & Solla's I4 for G(u) = erf(u / sqrt 2), from the covariance entries."""
    l4 = (1.0 + c11) * (1.0 + c22) - c12 * c12
    l0 = l4 * c34 - c23 * c24 * (1.0 + c11) - c13 * c14 * (1.0 + c22) + c12 * c13 * c24 + c12 * c14 * c23
    l1 = l4 * (1.0 + c33) - c23 * c23 * (1.0 + c11) - c13 * c13 * (1.0 + c22) + 2.0 * c12 * c13 * c23
    l2 = l4 * (1.0 + c44) - c24 * c24 * (1.0 + c11) - c14 * c14 * (1.0 + c22) + 2.0 * c12 * c14 * c24
    return (4.0 / math.pi**2) / np.sqrt(l4) * _asin_ratio(l0, l1 * l2)


def sym_sqrt(cov: Array) -> Array:
    """A symmetric square root of covariances [..., n, n] (eigenvalues clipped at 0: near-singular is fine)."""
    w, u = np.linalg.eigh(cov)
    return (u * np.sqrt(np.maximum(w, 0.0))[..., None, :]) @ np.swapaxes(u, -1, -2)


def draws(n: int, dim: int, seed: int) -> Array:
    """The fixed standard-normal draws [n, dim] of the Monte Carlo term (the same at every right-hand side)."""
    return np.random.default_rng(seed).standard_normal((n, dim))
