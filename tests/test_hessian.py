"""The Hessian at convergence (theory/hessian.py through converge): exact against finite differences of a NumPy
objective, Lanczos against exact, and the node-splitting saddle.

Objective throughout: train.loss=half_sse, the paper's J = 1/2 mean_x sum_c (f*_c(x) - f_c(x))^2 (sum over outputs,
mean over the training samples), except where mse = (2/C) J is stated. The oracles below are written from docs/model.md 1.6:
f(x) = W_L^T psi(... psi(W_1^T x + b_1) ...) + b_L with psi = max(z, a z) (a = 0: ReLU), the flat parameter vector
theta = (W_1, b_1, ..., W_L, b_L), each W_l [n_{l-1}, n_l] row-major, as converge lays it out.
"""

import numpy as np
import pytest
import torch

from studentspec import ConfigError, build, load_config
from studentspec.mlp.nets import Net
from studentspec.theory import hessian as hess
from studentspec.theory.converge import ConvergeOptions, _Problem, converge

F64 = torch.float64


# ---------------------------------------------------------------------------- independent oracles


def unpack(theta: np.ndarray, dims: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """theta -> [(W_l [n_{l-1}, n_l], b_l [n_l])] in converge's layout."""
    out, i = [], 0
    for a, b in zip(dims[:-1], dims[1:]):
        W = theta[i:i + a * b].reshape(a, b)
        i += a * b
        out.append((W, theta[i:i + b]))
        i += b
    assert i == len(theta)
    return out


def np_forward(theta: np.ndarray, dims: list[int], x: np.ndarray, slope: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Output [N, C] and every hidden pre-activation, docs/model.md 1 (psi = max(z, slope z))."""
    layers, h, pre = unpack(theta, dims), x, []
    for l, (W, b) in enumerate(layers):
        z = h @ W + b
        if l == len(layers) - 1:
            return z, pre
        pre.append(z)
        h = np.maximum(z, slope * z)
    raise AssertionError


def np_loss(theta: np.ndarray, dims: list[int], x: np.ndarray, y: np.ndarray, slope: float, objective: str = "half_sse") -> float:
    """half_sse: 1/2 mean_x sum_c (y - f)^2; mse: mean over samples and outputs of (y - f)^2."""
    r = np_forward(theta, dims, x, slope)[0] - y
    return float(0.5 * (r**2).sum(1).mean()) if objective == "half_sse" else float((r**2).mean())


def fd_hessian(f, theta: np.ndarray, h: float) -> np.ndarray:
    """Central finite-difference Hessian: [f(+i+j) - f(+i-j) - f(-i+j) + f(-i-j)] / (4 h^2)."""
    P = len(theta)
    H = np.zeros((P, P))
    E = np.eye(P) * h
    for i in range(P):
        for j in range(i, P):
            H[i, j] = H[j, i] = (f(theta + E[i] + E[j]) - f(theta + E[i] - E[j]) - f(theta - E[i] + E[j]) + f(theta - E[i] - E[j])) / (4 * h * h)
    return H


def plain_loss(theta: torch.Tensor, dims: list[int], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """half_sse of a two-layer ReLU net written directly in torch (for autograd gradients of the oracle)."""
    d, n, C = dims
    W1, b1 = theta[:d * n].view(d, n), theta[d * n:d * n + n]
    W2, b2 = theta[d * n + n:d * n + n + n * C].view(n, C), theta[-C:]
    f = torch.relu(x @ W1 + b1) @ W2 + b2
    return 0.5 * (f - y).square().sum(1).mean()


def net_of(theta: np.ndarray, dims: list[int], activation: str = "relu", slope: float = 0.1) -> Net:
    layers = unpack(theta, dims)
    return Net([torch.tensor(W, dtype=F64)[None] for W, _ in layers], [torch.tensor(b, dtype=F64)[None] for _, b in layers], activation, slope)


def problem(net: Net, x: np.ndarray, y: np.ndarray, objective: str = "half_sse") -> tuple[_Problem, torch.Tensor]:
    p = _Problem(net, torch.tensor(x, dtype=F64), torch.tensor(y, dtype=F64), objective)
    return p, p.flatten(net)


# ---------------------------------------------------------------------------- exact Hessian vs finite differences


@pytest.mark.parametrize("dims, activation, slope, objective", [([3, 4, 2], "relu", 0.0, "half_sse"),
                                                                ([3, 3, 2, 2], "leaky_relu", 0.1, "half_sse"),
                                                                ([3, 4, 3], "relu", 0.0, "mse")])
def test_exact_hessian_equals_finite_differences_of_a_numpy_objective(dims, activation, slope, objective):
    rng = np.random.default_rng(7)
    P = sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))
    x, y = rng.standard_normal((40, dims[0])), rng.standard_normal((40, dims[-1]))
    theta = rng.standard_normal(P)
    # the finite differences (steps of 1e-3 in two parameters) must stay inside one gate pattern: keep the samples
    # whose every pre-activation is well away from 0
    keep = np.all([np.abs(z).min(1) > 0.05 for z in np_forward(theta, dims, x, slope)[1]], axis=0)
    x, y = x[keep], y[keep]
    assert len(x) >= 15
    H_fd = fd_hessian(lambda t: np_loss(t, dims, x, y, slope, objective), theta, 1e-3)
    p, th = problem(net_of(theta, dims, activation, slope), x, y, objective)
    assert np.allclose(th.numpy(), theta)  # the layout the oracle assumes
    H = hess.hessian(p.loss, th).numpy()
    scale = np.abs(H_fd).max()
    assert np.abs(H - H_fd).max() < 1e-6 * scale
    assert np.abs(H - H.T).max() == 0.0
    # the spectrum converge stores: eigvalsh of the oracle's matrix
    spec = hess.spectrum(p.loss, th, exact_max=100)
    assert spec.method == "exact" and spec.n_params == P and list(spec.index) == list(range(P))
    assert np.abs(spec.eigenvalues - np.linalg.eigvalsh(H_fd)).max() < 1e-6 * scale
    # a chunked build is the same matrix
    assert torch.equal(hess.hessian(p.loss, th, chunk_size=5), hess.hessian(p.loss, th))
    # mutation check: a Hessian of a different objective is told apart (the tolerance is not vacuous)
    if objective == "mse":
        H_half = fd_hessian(lambda t: np_loss(t, dims, x, y, slope, "half_sse"), theta, 1e-3)
        assert np.abs(H - H_half).max() > 1e-2 * scale and np.abs(H - 2 / dims[-1] * H_half).max() < 1e-6 * scale


# ---------------------------------------------------------------------------- Lanczos vs exact


SMALL = ["input_dim=10", "output_dim=5", "teacher.widths=[4]", "teacher.decay=0", "data.n_eval=50", "train.loss=half_sse"]


def exact_fit(teacher: Net, split: dict[int, float]) -> Net:
    """A student that fits the one-seed two-layer teacher exactly: every teacher node copied, node j of `split` also
    duplicated, with fan-outs alpha v_j and (1 - alpha) v_j."""
    W, b, V, c = teacher.weights[0][0], teacher.biases[0][0], teacher.weights[1][0], teacher.biases[1][0]
    cols, bias, rows = [W], [b], [V.clone()]
    for j, alpha in split.items():
        rows[0][j] = alpha * V[j]
        cols.append(W[:, j:j + 1])
        bias.append(b[j:j + 1])
        rows.append((1 - alpha) * V[j:j + 1])
    return Net([torch.cat(cols, 1)[None], torch.cat(rows, 0)[None]], [torch.cat(bias)[None], c[None]], teacher.activation, teacher.slope)


def test_lanczos_extremes_equal_the_exact_ones():
    cfg = load_config(None, ["seeds=[1]", *SMALL, "student.multi=2", "data.n_train=300"])
    s = build(cfg)
    x, y = s.stream.x_train[0].double(), None
    teacher = s.teacher.to("cpu", F64)
    y = teacher.forward(x[None])[0][0]
    fit = exact_fit(teacher, {0: 0.3, 1: 0.6, 2: 0.5, 3: 0.8})  # 8 students, 133 parameters
    g = torch.Generator().manual_seed(0)
    generic = fit.map(lambda t: t + 0.1 * torch.randn(t.shape, generator=g, dtype=F64))
    k = 5
    for net, degenerate in ((generic, False), (fit, True)):
        p = _Problem(net, x, y, "half_sse")
        theta = p.flatten(net)
        exact = hess.spectrum(p.loss, theta, exact_max=1000)
        lan = hess.spectrum(p.loss, theta, exact_max=0, k=k)
        P = exact.n_params
        assert exact.method == "exact" and lan.method == "lanczos" and lan.converged and P == 133
        assert list(lan.index) == [0, 1, 2, 3, 4, 128, 129, 130, 131, 132]
        scale = np.abs(exact.eigenvalues).max()
        top, low = lan.eigenvalues[k:], lan.eigenvalues[:k]
        assert np.abs(top - exact.eigenvalues[-k:]).max() < 1e-9 * scale
        assert abs(low[0] - exact.eigenvalues[0]) < 1e-9 * scale
        if not degenerate:  # a simple spectrum: both ends are the exact ones
            assert np.abs(low - exact.eigenvalues[:k]).max() < 1e-9 * scale
            assert exact.summary()["n_near_zero"] == 0
        else:
            # an exact fit has a degenerate zero (rescalings, split directions): Lanczos finds every distinct
            # value of the bottom end, not its multiplicity; each value it returns is an exact eigenvalue and at
            # least the exact one of its rank (interlacing), so its near-zero count is a lower bound
            assert exact.summary()["n_near_zero"] > k
            assert all(np.abs(exact.eigenvalues - v).min() < 1e-9 * scale for v in low)
            assert (low >= exact.eigenvalues[:k] - 1e-9 * scale).all()
            assert 1 <= lan.summary()["n_near_zero"] <= exact.summary()["n_near_zero"]


# ---------------------------------------------------------------------------- node splitting


def split(theta: np.ndarray, dims: list[int], k: int, alpha: float) -> tuple[np.ndarray, list[int]]:
    """Duplicate hidden node k of a two-layer net (appended as node n): same w_k, b_k; fan-outs alpha v_k, (1-alpha) v_k."""
    (W1, b1), (W2, b2) = unpack(theta, dims)
    W1 = np.concatenate([W1, W1[:, k:k + 1]], 1)
    b1 = np.concatenate([b1, b1[k:k + 1]])
    W2 = np.concatenate([W2, (1 - alpha) * W2[k:k + 1]], 0)
    W2[k] *= alpha
    d, n, C = dims
    return np.concatenate([W1.ravel(), b1, W2.ravel(), b2]), [d, n + 1, C]


def split_directions(dims2: list[int], k: int, alpha: float, u: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In the split net (new node last): d_u moves w~_k by (1-alpha) u and w~_k' by -alpha u (u in R^{d+1}, the
    augmented fan-in); d_t moves v_k by t and v_k' by -t. Both keep f unchanged to first order."""
    d, n, C = dims2
    du, dt = np.zeros(d * n + n + n * C + C), np.zeros(d * n + n + n * C + C)
    for node, cu, ct in ((k, 1 - alpha, 1.0), (n - 1, -alpha, -1.0)):
        du[[i * n + node for i in range(d)]] = cu * u[:d]
        du[d * n + node] = cu * u[d]
        dt[d * n + n + node * C: d * n + n + (node + 1) * C] = ct * t
    return du, dt


def under_realized(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """A critical point of a 2-node ReLU student of a 4-node teacher (d=5, C=3): non-zero loss, zero full-batch gradient."""
    cfg = load_config(None, [f"seeds=[{seed}]", "input_dim=5", "output_dim=3", "teacher.widths=[4]", "teacher.decay=0",
                             "data.n_train=200", "data.n_eval=50", "train.loss=half_sse"])
    s = build(cfg)
    teacher = s.teacher.to("cpu", F64)
    x = s.stream.x_train.double()
    # start from teacher nodes 0 and 1 with their fan-outs; Newton on the full-batch half_sse takes it to a critical point
    start = Net([teacher.weights[0][:, :, :2].clone(), teacher.weights[1][:, :2].clone()],
                [teacher.biases[0][:, :2].clone(), teacher.biases[1].clone()])
    res = converge(None, start, teacher, x, objective="half_sse", options=ConvergeOptions(tol=1e-300, method="newton", max_iter=200))
    # converge stops ("stalled") once the loss no longer drops (per-sample gradients never vanish here); finish with
    # pseudo-inverse Newton steps on the test's own objective until the full-batch gradient is at rounding level
    theta = torch.cat([t[0].reshape(-1) for t in res.student.parameters()])
    xs, y = x[0], teacher.forward(x)[0][0]
    dims = [5, 2, 3]
    for _ in range(20):
        g = torch.func.grad(plain_loss)(theta, dims, xs, y)
        lam, Q = torch.linalg.eigh(torch.autograd.functional.hessian(lambda t: plain_loss(t, dims, xs, y), theta))
        keep = lam.abs() > 1e-10 * lam.abs().max()  # the zero modes (rescalings) are left alone
        theta = theta - Q[:, keep] @ ((Q[:, keep].T @ g) / lam[keep])
    return theta.numpy(), xs.numpy(), y.numpy(), dims


def test_splitting_a_node_at_a_non_global_critical_point_keeps_loss_and_gradient_and_makes_a_saddle():
    theta, x, y, dims = under_realized()
    th = torch.tensor(theta, requires_grad=True)
    loss0 = plain_loss(th, dims, torch.tensor(x), torch.tensor(y))
    (g0,) = torch.autograd.grad(loss0, th)
    assert float(loss0.detach()) > 1e-2 and float(g0.abs().max()) < 1e-13  # a critical point with a residual: not a global minimum
    (W1, b1), (W2, b2) = unpack(theta, dims)
    z = x @ W1 + b1
    assert np.abs(z).min() > 5e-3  # no training sample on a student boundary: the Hessian is that of one gate pattern
    k = 0
    r = np_forward(theta, dims, x, 0.0)[0] - y  # residual f - f* [N, C]
    xa = np.concatenate([x, np.ones((len(x), 1))], 1)
    G = (xa * (z[:, k:k + 1] > 0)).T @ r / len(x)  # [d+1, C]: (1/N) sum_x psi'(w~_k x~) x~ (f - f*)^T
    # at the critical point G v_k = 0 and w~_k^T G = 0 (the gradients of w~_k and v_k), but G itself is not 0
    assert np.abs(G @ W2[k]).max() < 1e-10 and np.abs(np.append(W1[:, k], b1[k]) @ G).max() < 1e-10
    U, sv, Vt = np.linalg.svd(G)
    assert sv[0] > 0.1 and 0 < (z[:, k] > 0).mean() < 1  # node k is active on part of the training set
    unsplit = converge(None, net_of(theta, dims), net_of(theta, dims), torch.tensor(x)[None], y=torch.tensor(y)[None],
                       options=ConvergeOptions(max_iter=0))
    h0 = unsplit.per_seed[0].hessian
    assert h0["method"] == "exact" and h0["n_negative"] == 0  # the 2-node net sits at a local minimum
    for alpha in (0.3, 0.5, 1.5):
        theta2, dims2 = split(theta, dims, k, alpha)
        th2 = torch.tensor(theta2, requires_grad=True)
        loss2 = plain_loss(th2, dims2, torch.tensor(x), torch.tensor(y))
        (g2,) = torch.autograd.grad(loss2, th2)
        assert abs(float(loss2.detach()) - float(loss0.detach())) < 1e-14 and float(g2.abs().max()) < 1e-13  # same loss, still critical
        net2 = net_of(theta2, dims2)
        p, t2 = problem(net2, x, y)
        H = hess.hessian(p.loss, t2).numpy()
        du, dt = split_directions(dims2, k, alpha, U[:, 0], Vt[0])
        f = lambda e: np_loss(theta2 + e, dims2, x, y, 0.0)  # noqa: E731
        # along d_u the loss is flat to second order (f is unchanged within the gate pattern)
        e = 1e-4  # moves a pre-activation by < 1e-3: inside the gate pattern
        assert abs(du @ H @ du) < 1e-12 and abs(f(e * du) - 2 * f(0 * du) + f(-e * du)) / e**2 < 1e-6
        # the (d_u, d_t) block is [[0, s], [s, 0]] with s = u^T G t = sigma_max(G): finite differences of the NumPy loss
        mixed = (f(e * (du + dt)) - f(e * (du - dt)) - f(e * (dt - du)) + f(-e * (du + dt))) / (4 * e**2)
        assert mixed == pytest.approx(sv[0], rel=1e-6) and du @ H @ dt == pytest.approx(sv[0], rel=1e-9)
        assert abs(dt @ H @ dt) < 1e-12
        # so the Rayleigh quotient of a du + b dt reaches -sigma / sqrt(2 ((1-alpha)^2 + alpha^2)) < 0: a saddle
        c1 = (1 - alpha) ** 2 + alpha**2
        bound = -sv[0] / np.sqrt(2 * c1)
        res = converge(None, net2, net_of(theta, dims), torch.tensor(x)[None], y=torch.tensor(y)[None],
                       options=ConvergeOptions(max_iter=0))
        h = res.per_seed[0].hessian
        assert h["method"] == "exact" and h["n_params"] == len(theta) + dims[0] + 1 + dims[2]
        assert h["min_eigenvalue"] <= bound * (1 - 1e-9) and h["n_negative"] >= 1
        assert res.spectra[0].eigenvalues[0] == pytest.approx(np.linalg.eigvalsh(H)[0], rel=1e-9)
        assert h["n_near_zero"] >= h0["n_near_zero"]
        if alpha == 0.5:
            # the two copies are identical: H splits into the swap-symmetric part (the unsplit net's Hessian, here >= 0)
            # and the antisymmetric one, [[0, G], [G^T, 0]] in unit coordinates: eigenvalues +-sigma_i(G) and zeros
            rank = int((sv > 1e-12).sum())
            assert rank == 2 and h["n_negative"] == rank
            assert np.allclose(res.spectra[0].eigenvalues[:rank], -sv[:rank], rtol=1e-9, atol=0)
            assert h["n_near_zero"] == h0["n_near_zero"] + dims[0] + 1 + dims[2] - 2 * rank


def test_splitting_a_node_of_an_exact_fit_adds_exactly_its_parameters_as_flat_directions():
    """At a zero-loss fit the Hessian is J^T J; the copy's Jacobian columns are multiples of the original's, so the rank
    stays and the null space grows by d + 1 + C (the copy's parameters); no negative curvature appears."""
    cfg = load_config(None, ["seeds=[2]", *SMALL, "data.n_train=200"])
    s = build(cfg)
    teacher = s.teacher.to("cpu", F64)
    x = s.stream.x_train.double()
    d, C = 10, 5
    base = exact_fit(teacher, {})
    counts = []
    for net in (base, exact_fit(teacher, {1: 0.3}), exact_fit(teacher, {1: 0.3, 2: -0.5})):
        res = converge(None, net, teacher, x, options=ConvergeOptions(max_iter=0))
        h = res.per_seed[0].hessian
        assert res.per_seed[0].loss < 1e-28 and h["n_negative"] == 0
        counts.append(h["n_near_zero"])
    assert counts[1] - counts[0] == d + 1 + C and counts[2] - counts[1] == d + 1 + C
    # the split direction is an eigenvector of eigenvalue 0 (H d_u = 0), checked on the code's Hessian
    theta = np.concatenate([t[0].numpy().ravel() for t in base.parameters()])
    theta2, dims2 = split(theta, [d, 4, C], 1, 0.3)
    p, t2 = problem(net_of(theta2, dims2), x[0].numpy(), teacher.forward(x)[0][0].numpy())
    H = hess.hessian(p.loss, t2).numpy()
    du, _ = split_directions(dims2, 1, 0.3, np.random.default_rng(0).standard_normal(d + 1), np.zeros(C))
    assert np.abs(H @ du).max() < 1e-12 * np.abs(H).max() * np.abs(du).max()


# ---------------------------------------------------------------------------- options


def test_hessian_options_out_of_range_raise_one_line_config_errors():
    cfg = load_config(None, ["seeds=[1]", *SMALL, "data.n_train=20"])
    s = build(cfg)
    for kwargs, key in [({"hessian_exact_max": -1}, "hessian_exact_max"), ({"hessian_k": 0}, "hessian_k"),
                        ({"hessian_tol_rel": 1.0}, "hessian_tol_rel"), ({"hessian_k": 2.5}, "hessian_k")]:
        with pytest.raises(ConfigError, match=key) as err:
            converge(cfg, s.student, s.teacher, s.stream.x_train, options=ConvergeOptions(max_iter=0, **kwargs))
        assert "\n" not in str(err.value)


def test_a_lanczos_end_that_did_not_converge_reports_no_extreme():
    """Only the top end converged (as on two_layer_quick's 7600 parameters): no min eigenvalue is claimed from it."""
    top = hess.HessianSpectrum(100, "lanczos", np.array([3.0, 5.0]), np.array([98, 99]), 1e-6, converged=False)
    assert top.summary()["min_eigenvalue"] is None and top.summary()["max_eigenvalue"] == 5.0
    both = hess.HessianSpectrum(100, "lanczos", np.array([-1.0, 0.0, 3.0, 5.0]), np.array([0, 1, 98, 99]), 1e-6)
    assert (both.summary()["min_eigenvalue"], both.summary()["n_negative"], both.summary()["n_near_zero"]) == (-1.0, 1, 1)


def test_non_finite_end_point_skips_the_hessian():
    p = hess.spectrum(lambda t: (t * float("inf")).sum(), torch.ones(3, dtype=F64))
    assert p.method == "skipped" and len(p.eigenvalues) == 0 and p.summary()["n_near_zero"] is None
