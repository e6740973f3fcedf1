"""Closed-form population loss (studentspec.population) against independent oracles:
Monte Carlo, 1-D quadrature, finite differences, and the config schema."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from studentspec import ConfigError, load_config
from studentspec.theory.population import (
    bound_terms,
    check_supported,
    gradient_flow,
    kernel_args,
    population_grad,
    population_loss,
    relu_kernel,
    specialization_angles,
)

F64 = torch.float64


def psi(z: torch.Tensor, slope: float) -> torch.Tensor:
    """Reference activation max(z, slope z), written independently of the package."""
    return torch.maximum(z, slope * z)


def directions(n: int, d: int, seed: int) -> torch.Tensor:
    """n uniform unit vectors in R^d (normalized Gaussians), [n, d]."""
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return z / z.norm(dim=1, keepdim=True)


def gaussian_mean(g, d: int, sigma: float, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo E_x[g(x)] [k] and its standard error, x ~ N(0, sigma^2 I_d), g 2-homogeneous.

    Variance reduction, all exact in expectation: x = r * xhat with r independent of xhat, so
    E g(x) = E[r^2] E g(xhat) = d sigma^2 E g(xhat) (no radial noise); xhat and -xhat share a draw
    (antithetic); and the quadratics xhat_i xhat_j - delta_ij / d (mean 0 on the sphere) serve as
    regression control variates, leaving only the non-quadratic part of g as noise.
    """
    xh = directions(n, d, seed)
    y = 0.5 * d * sigma**2 * (g(xh) + g(-xh))  # [n, k]
    i, j = torch.triu_indices(d, d)
    Z = xh[:, i] * xh[:, j] - (i == j).to(F64) / d
    yc = y - y.mean(0)
    beta = torch.linalg.solve(Z.T @ Z, Z.T @ yc)
    res = y - Z @ beta
    return res.mean(0), res.std(0) / math.sqrt(n)


def pairs(d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns of U and W: a generic pair, u = w, u = -w, a near-orthogonal pair, unequal norms."""
    g = torch.Generator().manual_seed(3)
    a, b, c = (torch.randn(d, generator=g, dtype=F64) for _ in range(3))
    U = torch.stack([a, b, b, c, 0.3 * a], dim=1)
    W = torch.stack([b, b, -b, a, 2.0 * c], dim=1)
    return U, W


@pytest.mark.parametrize("slope", [0.0, 0.1, 0.35])
def test_kernel_matches_monte_carlo(slope: float) -> None:
    torch.set_num_threads(1)
    d, sigma = 4, 1.7
    U, W = pairs(d)
    mc, stderr = gaussian_mean(lambda x: psi(x @ U, slope) * psi(x @ W, slope), d, sigma, 1_000_000, seed=11)
    closed = torch.diagonal(relu_kernel(U, W, sigma=sigma, slope=slope))
    # u = w is exactly quadratic for ReLU, so the control variates leave only rounding: floor the error bar.
    scale = sigma**2 * U.norm(dim=0) * W.norm(dim=0)
    assert ((closed - mc).abs() < 4 * stderr + 1e-9 * scale).all(), (closed, mc, stderr)
    # Relative to the kernel's natural scale sigma^2 |u||w|: Leaky ReLU can cancel K itself to near 0.
    assert ((closed - mc).abs() / scale).max() < 3e-3


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_kernel_matches_quadrature(slope: float) -> None:
    # psi(u.x)psi(w.x) is 2-homogeneous, so E = E[r^2] * mean over the circle = (sigma^2/pi) int_0^2pi.
    sigma = 0.6
    Q = torch.linalg.qr(torch.randn(7, 2, dtype=F64, generator=torch.Generator().manual_seed(5)))[0]
    for u2, w2 in [((1.0, 0.0), (0.3, 2.0)), ((1.5, -0.4), (1.5, -0.4)), ((0.7, 0.2), (-1.4, -0.4)), ((1.0, 1e-9), (2.0, 0.0))]:
        f = lambda p: max(u2[0] * math.cos(p) + u2[1] * math.sin(p), slope * (u2[0] * math.cos(p) + u2[1] * math.sin(p))) * max(  # noqa: E731
            w2[0] * math.cos(p) + w2[1] * math.sin(p), slope * (w2[0] * math.cos(p) + w2[1] * math.sin(p))
        )
        cuts = sorted({(math.atan2(v[1], v[0]) + k * math.pi / 2) % (2 * math.pi) for v in (u2, w2) for k in (1, 3)})
        ref = sigma**2 / math.pi * integrate.quad(f, 0.0, 2 * math.pi, points=cuts, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
        u, w = Q @ torch.tensor(u2, dtype=F64), Q @ torch.tensor(w2, dtype=F64)  # embed in d = 7
        assert relu_kernel(u, w, sigma=sigma, slope=slope).item() == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_kernel_batched_over_seeds_and_symmetric() -> None:
    g = torch.Generator().manual_seed(2)
    U, W = torch.randn(3, 6, 4, generator=g, dtype=F64), torch.randn(3, 6, 5, generator=g, dtype=F64)
    K = relu_kernel(U, W, sigma=1.3, slope=0.1)
    assert K.shape == (3, 4, 5)
    for s in range(3):
        torch.testing.assert_close(K[s], relu_kernel(U[s], W[s], sigma=1.3, slope=0.1), rtol=0, atol=1e-14)
        torch.testing.assert_close(relu_kernel(W[s], U[s], sigma=1.3, slope=0.1), K[s].T, rtol=0, atol=1e-14)
    # Diagonal of K(U, U): E[psi(z)^2] = (1 + a^2)/2 sigma^2 |u|^2.
    diag = torch.diagonal(relu_kernel(U, U, sigma=1.3, slope=0.1), dim1=-2, dim2=-1)
    torch.testing.assert_close(diag, (1 + 0.01) / 2 * 1.3**2 * U.pow(2).sum(-2), rtol=1e-13, atol=0)


def test_kernel_gradient_at_parallel_pairs() -> None:
    # dK(u, w)/dw = E[psi(u.x) psi'(w.x) x]: for u = c w (c > 0) both gates agree, giving
    # (1 + a^2)/2 sigma^2 u; for u = -c w they disagree, giving a sigma^2 u.
    # A 1e-9 tilt (rounding-sized in cos t) moves the exact gradient by ~1e-9 only.
    w = torch.tensor([0.3, -1.2, 0.5], dtype=F64)
    tilt = torch.tensor([0.4, 0.1, 0.0], dtype=F64)  # orthogonal to w
    for c, slope, eps in itertools.product((1.0, 2.5, -1.0, -0.7), (0.0, 0.1), (0.0, 1e-9)):
        u = (c * w + eps * tilt).requires_grad_(True)
        v = w.clone().requires_grad_(True)
        relu_kernel(u, v, sigma=1.5, slope=slope).backward()
        assert torch.isfinite(u.grad).all() and torch.isfinite(v.grad).all()
        gate = (1 + slope**2) / 2 if c > 0 else slope
        torch.testing.assert_close(v.grad, gate * 1.5**2 * c * w, rtol=0, atol=1e-8)
    u = torch.zeros(3, dtype=F64, requires_grad=True)  # a dead (zero) node: K = 0, gradients finite
    v = w.clone().requires_grad_(True)
    relu_kernel(u, v).backward()
    assert torch.isfinite(u.grad).all() and torch.equal(v.grad, torch.zeros(3, dtype=F64))


def small_problem(seed: int = 0, d: int = 5, m: int = 3, n: int = 6, C: int = 2):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    return r(d, m), r(m, C), r(d, n), r(n, C)


@pytest.mark.parametrize("slope", [0.0, 0.15])
def test_population_loss_matches_monte_carlo(slope: float) -> None:
    torch.set_num_threads(1)
    sigma = 1.4
    W_t, V_t, W_s, V_s = small_problem()

    def half_sq_err(x: torch.Tensor) -> torch.Tensor:  # teacher and student see the same x
        diff = psi(x @ W_t, slope) @ V_t - psi(x @ W_s, slope) @ V_s
        return 0.5 * diff.pow(2).sum(-1, keepdim=True)

    mc, stderr = (t.item() for t in gaussian_mean(half_sq_err, W_t.shape[0], sigma, 1_000_000, seed=21))
    closed = population_loss(W_t, V_t, W_s, V_s, sigma=sigma, slope=slope).item()
    assert mc > 1.0  # not a tiny loss: the relative test means something
    assert abs(closed - mc) < 4 * stderr
    assert abs(closed - mc) / mc < 1e-3


def test_population_loss_zero_at_teacher_and_batched() -> None:
    W_t, V_t, W_s, V_s = small_problem(seed=4)
    assert abs(population_loss(W_t, V_t, W_t, V_t, sigma=2.0).item()) < 1e-13
    # Split each teacher node into two student copies with fan-outs summing to V*: still zero loss.
    assert abs(population_loss(W_t, V_t, torch.cat([W_t, 3.0 * W_t], 1), torch.cat([0.25 * V_t, 0.25 * V_t]), slope=0.1).item()) < 1e-13
    batch = [small_problem(seed=s) for s in range(3)]
    stacked = [torch.stack(t) for t in zip(*batch)]
    J = population_loss(*stacked, sigma=0.8, slope=0.1)
    assert J.shape == (3,)
    for s, args in enumerate(batch):
        assert J[s].item() == pytest.approx(population_loss(*args, sigma=0.8, slope=0.1).item(), rel=1e-14)


def finite_difference(W_t, V_t, W_s, V_s, sigma, slope, h=1e-6):
    """Central differences of the closed-form loss, one coordinate at a time."""
    out = []
    for which in (0, 1):
        P = [W_s.clone(), V_s.clone()]
        grad = torch.zeros_like(P[which])
        for idx in np.ndindex(*P[which].shape):
            vals = []
            for step in (h, -h):
                Q = [p.clone() for p in P]
                Q[which][idx] += step
                vals.append(population_loss(W_t, V_t, Q[0], Q[1], sigma=sigma, slope=slope).item())
            grad[idx] = (vals[0] - vals[1]) / (2 * h)
        out.append(grad)
    return out


@pytest.mark.parametrize("slope", [0.0, 0.1])
@pytest.mark.parametrize("method", ["analytic", "autograd"])
def test_gradient_matches_finite_differences(slope: float, method: str) -> None:
    W_t, V_t, W_s, V_s = small_problem(seed=7)
    W_s[:, 0] = 1.7 * W_t[:, 1]  # theta = 0 between student 0 and teacher 1
    W_s[:, 2] = W_s[:, 3]  # theta = 0 between two students
    W_s[:, 4] = -W_t[:, 0]  # theta = pi
    gW, gV = population_grad(W_t, V_t, W_s, V_s, sigma=1.3, slope=slope, method=method)
    assert torch.isfinite(gW).all() and torch.isfinite(gV).all()
    fW, fV = finite_difference(W_t, V_t, W_s, V_s, 1.3, slope)
    for got, ref in ((gW, fW), (gV, fV)):
        assert ((got - ref).abs().max() / ref.abs().max()).item() < 1e-6


def test_gradient_methods_agree_batched() -> None:
    stacked = [torch.stack(t) for t in zip(*[small_problem(seed=s) for s in range(4)])]
    a = population_grad(*stacked, sigma=0.9, slope=0.05, method="analytic")
    b = population_grad(*stacked, sigma=0.9, slope=0.05, method="autograd")
    for x, y in zip(a, b):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_gradient_flow_specializes() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    d, m, n, C = 10, 3, 6, 4
    W_t = torch.linalg.qr(torch.randn(d, m, generator=g, dtype=F64))[0]  # orthonormal unit columns
    V_t = torch.randn(m, C, generator=g, dtype=F64)
    W_s, V_s = 1e-3 * torch.randn(d, n, generator=g, dtype=F64), 1e-3 * torch.randn(n, C, generator=g, dtype=F64)
    assert specialization_angles(W_t, W_s).min() > 30.0  # random init: far from every teacher node
    flow = gradient_flow(W_t, V_t, W_s, V_s, steps=1500, lr=0.5, record_every=100)
    assert flow.steps[0] == 0 and flow.steps[-1] == 1500 and flow.loss.shape == flow.steps.shape
    assert flow.loss[-1] < 1e-4 * flow.loss[0]
    assert flow.loss[-1].item() == pytest.approx(population_loss(W_t, V_t, flow.W, flow.V).item(), rel=1e-12)
    assert specialization_angles(W_t, flow.W).max() < 5.0


def test_specialization_angles() -> None:
    W_t = torch.eye(3, dtype=F64)[:, :2]
    W_s = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=F64)
    torch.testing.assert_close(specialization_angles(W_t, W_s), torch.tensor([0.0, 45.0], dtype=F64))


VALID = ["teacher.widths=[3]", "teacher.bias=0", "input_dim=10", "output_dim=2"]


@pytest.mark.parametrize(
    "override, key",
    [
        ("teacher.widths=[3,3]", "teacher.widths"),
        ("teacher.bias=-0.1", "teacher.bias"),
        ("teacher.recipe=deep", "teacher.recipe"),
        ("teacher.tune=true", "teacher.tune"),
        ("data.kind=uniform", "data.kind"),
        ("teacher.batchnorm=before", "teacher.batchnorm"),
    ],
)
def test_check_supported_rejects(override: str, key: str) -> None:
    cfg = load_config(None, [*VALID, override])
    with pytest.raises(ConfigError) as err:
        check_supported(cfg)
    msg = str(err.value)
    assert key in msg and "\n" not in msg


def test_check_supported_accepts_and_gives_kernel_args() -> None:
    check_supported(load_config(None, VALID))
    assert kernel_args(load_config(None, [*VALID, "data.std=2.0"])) == {"sigma": 2.0, "slope": 0.0, "psi": "arccos"}
    leaky = load_config(None, [*VALID, "teacher.activation=leaky_relu", "teacher.leaky_slope=0.2"])
    assert kernel_args(leaky) == {"sigma": 1.5, "slope": 0.2, "psi": "arccos"}
    with pytest.raises(ConfigError, match="teacher.widths"):
        kernel_args(load_config(None, ["teacher.bias=0", "teacher.widths=[3,3]"]))


def test_bound_terms_scaling() -> None:
    base = bound_terms(5, 100, 0.1)
    assert base["samples"] == pytest.approx(5**2.5 * 100**3 / 0.1)
    assert base["grad_level"] == pytest.approx(0.1 / (5**1.5 * 10.0))
    d2, K2, e2 = bound_terms(5, 200, 0.1), bound_terms(10, 100, 0.1), bound_terms(5, 100, 0.05)
    assert d2["samples"] / base["samples"] == pytest.approx(8.0)
    assert d2["grad_level"] / base["grad_level"] == pytest.approx(2**-0.5)
    assert K2["samples"] / base["samples"] == pytest.approx(2**2.5)
    assert K2["grad_level"] / base["grad_level"] == pytest.approx(2**-1.5)
    assert e2["samples"] / base["samples"] == pytest.approx(2.0)
    assert e2["grad_level"] / base["grad_level"] == pytest.approx(0.5)
    grid = bound_terms(np.array([[2], [4]]), np.array([10, 20, 40]), 0.1)  # broadcasts for plotting
    assert grid["samples"].shape == (2, 3) and np.all(np.diff(np.log2(grid["samples"]), axis=1) == pytest.approx(3.0))


def test_gradient_flow_batched_matches_per_seed() -> None:
    probs = [small_problem(seed=s) for s in range(2)]
    stacked = [torch.stack(t) for t in zip(*probs)]
    flow = gradient_flow(*stacked, steps=20, lr=0.01, sigma=1.2, slope=0.1, record_every=10)
    assert flow.loss.shape == (3, 2) and flow.loss[-1].lt(flow.loss[0]).all()
    for s, args in enumerate(probs):
        one = gradient_flow(*args, steps=20, lr=0.01, sigma=1.2, slope=0.1, record_every=10)
        torch.testing.assert_close(flow.W[s], one.W, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(flow.loss[:, s], one.loss, rtol=1e-12, atol=1e-12)
    assert specialization_angles(stacked[0], flow.W).shape == (2, 3)


def test_population_cli_runs_plots_and_rejects_unsupported(tmp_path, capsys):
    from studentspec.cli import main

    out = tmp_path / "pop"
    args = ["population", "configs/two_layer_quick.yaml", "seeds=[1,2]", "teacher.bias=0", "train.lr=0.1", "--steps", "400", "--out", str(out)]
    assert main(args) == 0
    info = json.loads((out / "population.json").read_text())
    assert [len(l) for l in info["loss"]] == [len(info["steps"])] * 2 and info["loss"][0][-1] < info["loss"][0][0] / 10
    assert main(["plot", str(out)]) == 0 and (out / "figures" / "population.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["population", "configs/deep_quick.yaml", "--out", str(tmp_path / "deep")]) == 2
    assert "supports one hidden layer" in capsys.readouterr().err and not (tmp_path / "deep").exists()
    assert main(["population", "configs/two_layer_quick.yaml", "--out", str(tmp_path / "bias")]) == 2
    assert "teacher.bias" in capsys.readouterr().err
