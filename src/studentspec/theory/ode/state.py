"""The ODE's state (order parameters of every seed), its settings and its solution: plain numpy float64 records."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("euler", "rk4")


@dataclass(frozen=True)
class OdeState:
    """Every seed at one time: Q = s^2 W^T W [S, K, K], R = s^2 W^T W* [S, K, M], T = s^2 W*^T W* [S, M, M],
    the student's second layer V [S, K, C] and the teacher's Vt [S, M, C]."""

    Q: np.ndarray
    R: np.ndarray
    T: np.ndarray
    V: np.ndarray
    Vt: np.ndarray

    def __post_init__(self) -> None:
        S, K, M = self.R.shape
        C = self.V.shape[-1]
        want = {"Q": (S, K, K), "T": (S, M, M), "V": (S, K, C), "Vt": (S, M, C)}
        for name, shape in want.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"OdeState.{name} has shape {getattr(self, name).shape}, expected {shape}")


@dataclass(frozen=True)
class OdeSettings:
    """How to integrate: activation (slope: Leaky ReLU's a), rates in ODE units (eta = lr_eff s^2 d for the first
    layer, eta_v = lr_eff d for the second, 0 when frozen), batch size B, input dimension d (t = step / d), the
    objective, the fixed step dt and its method, and the Monte Carlo draws of the second-order term."""

    activation: str
    slope: float
    eta: float
    eta_v: float
    train_first: bool
    batch: int
    input_dim: int
    loss: str
    dt: float = 0.01
    method: str = "euler"
    mc_samples: int = 20000
    mc_seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r}: one of {', '.join(METHODS)}")
        if not self.dt > 0:
            raise ValueError(f"dt must be > 0, got {self.dt}")
        if self.batch < 1 or self.input_dim < 1 or self.mc_samples < 2:
            raise ValueError("batch, input_dim must be >= 1 and mc_samples >= 2")
        if self.loss not in ("half_sse", "mse"):
            raise ValueError(f"loss {self.loss!r}: the ODEs describe half_sse and mse")


@dataclass(frozen=True)
class OdeSolution:
    """The trajectory at the times t [n] (t = step / d): Q, R, V [n, S, ...], the constants T, Vt, the population
    J = 1/2 E||f* - f||^2 [n, S] (half_sse), the Monte Carlo error bound mc_error [n, S] (docs/theory.md: the
    accumulated standard error of Q's second-order term, max over entries; zeros for closed forms) and the
    integration's wall time."""

    t: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    V: np.ndarray
    T: np.ndarray
    Vt: np.ndarray
    J: np.ndarray
    mc_error: np.ndarray
    seconds: float
