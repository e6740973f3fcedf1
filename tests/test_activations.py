"""The activation registry: each psi and psi' against its formula in NumPy and finite differences, the hand
backward against autograd, training through train() for the new ones, and where each may run."""

import math

import numpy as np
import pytest
import torch
from scipy.special import erf as np_erf

from studentspec import load_config
from studentspec.ensemble import activations
from studentspec.mlp import backprop
from studentspec import train
from studentspec.config import ConfigError
from studentspec.mlp.nets import Net
from studentspec.theory.population import check_supported, kernel_args, population_grad, population_loss

SLOPE = 0.1
FORMULAS = {  # docs/model.md: psi for ReLU and Leaky ReLU; linear is the identity; erf the error function
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, SLOPE * z),
    "linear": lambda z: z,
    "erf": lambda z: np_erf(z),
}
Z = np.array([-3.0, -1.2, -0.3, 0.2, 0.7, 2.5])  # no kink at 0 among them: finite differences apply


def test_every_registered_activation_has_its_formula_here():
    assert activations.names() == ["relu", "leaky_relu", "linear", "erf"]


@pytest.mark.parametrize("name", list(FORMULAS))
def test_forward_and_derivative_match_numpy_and_finite_differences(name):
    act = activations.get(name)
    z = torch.tensor(Z, dtype=torch.float64)
    np.testing.assert_allclose(act.forward(z, SLOPE).numpy(), FORMULAS[name](Z), rtol=0, atol=1e-15)
    h = 1e-6
    fd = (FORMULAS[name](Z + h) - FORMULAS[name](Z - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(z, SLOPE).numpy(), fd, rtol=1e-8, atol=1e-9)
    g = torch.linspace(-1, 1, len(Z), dtype=torch.float64)
    np.testing.assert_allclose(act.backward(g.clone(), z, SLOPE).numpy(), g.numpy() * fd, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("name", list(FORMULAS))
def test_hand_backward_equals_autograd_of_the_half_sse_objective(name):
    """J = 1/2 sum_c (f - y)^2, mean over the batch; gradients by the hand backward vs autograd of Net.forward."""
    g = torch.Generator().manual_seed(3)
    dims = [5, 4, 3, 2]
    W = [torch.randn(2, a, b, generator=g, dtype=torch.float64) for a, b in zip(dims[:-1], dims[1:])]
    b = [torch.randn(2, n, generator=g, dtype=torch.float64) * 0.1 for n in dims[1:]]
    net = Net([w.clone().requires_grad_() for w in W], [c.clone().requires_grad_() for c in b], name, SLOPE)
    x = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    y = torch.randn(2, 7, 2, generator=g, dtype=torch.float64)
    out, _ = net.forward(x)
    (0.5 * (out - y).square().sum(dim=2).mean(dim=1)).sum().backward()
    with torch.no_grad():
        tr = net.trace(x)
        out2, hs, zs = tr.out, tr.inputs, tr.pre
        grads = backprop.backward(net, hs, zs, (out2 - y) / x.shape[1])
    auto = [p.grad for pair in zip(net.weights, net.biases) for p in pair]
    assert len(grads) == len(auto) == 6  # 3 layers x (W, b): zip below compares every one
    for got, want in zip(grads, auto):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["linear", "erf"])
def test_new_activations_train_on_their_path_and_fit_their_teacher(name):
    """linear runs in the compiled kernel (Leaky ReLU's code at a = 1) where it builds, erf (no kernel id) on torch.
    Objective: half_sse (the config default, the paper's J); the check is on the eval MSE (mean over samples and outputs)."""
    from studentspec.mlp import kernel as ckernel

    cfg = load_config(None, ["seeds=[1,2]", "input_dim=6", "output_dim=3", "teacher.widths=[3]", f"teacher.activation={name}",
                             "teacher.bias=0", "student.multi=2", "data.n_train=400", "data.n_eval=200", "train.lr=0.05",
                             "train.steps_per_epoch=500", "train.epochs=4", "eval.every=4"])
    result = train(cfg, progress=False)
    path = "c" if name == "linear" and not ckernel._load()[1] else "torch"
    assert result.kernel == path and result.evals[-1].result.path == path
    first, last = result.evals[1].result.mse, result.evals[-1].result.mse  # eval split at step 0 and at the end
    assert torch.all(last < 0.2 * first), (first, last)


def test_linear_population_loss_is_the_monte_carlo_mean_of_the_linear_objective():
    """Linear psi: J = 1/2 E||V*^T W*^T x - V^T W^T x||^2 = sigma^2/2 ||W* V* - W V||_F^2 for x ~ N(0, sigma^2 I)."""
    g = torch.Generator().manual_seed(0)
    Wt, Vt, Ws, Vs = (torch.randn(s, generator=g, dtype=torch.float64) for s in [(4, 3), (3, 2), (4, 5), (5, 2)])
    sigma = 1.5
    closed = population_loss(Wt, Vt, Ws, Vs, sigma=sigma, slope=activations.get("linear").leaky_slope(0.1))
    exact = 0.5 * sigma**2 * ((Wt @ Vt - Ws @ Vs) ** 2).sum()
    torch.testing.assert_close(closed, exact, rtol=1e-12, atol=0)


def test_erf_population_loss_is_the_monte_carlo_mean_and_its_gradient_is_autograds():
    """psi = erf, x ~ N(0, sigma^2 I): J = 1/2 E||V*^T erf(W*^T x) - V^T erf(W^T x)||^2 by sampling (2e6 draws, NumPy)."""
    rng = np.random.default_rng(0)
    Wt, Vt, Ws, Vs = (rng.standard_normal(s) * 0.7 for s in [(4, 3), (3, 2), (4, 5), (5, 2)])
    sigma = 1.5
    x = rng.standard_normal((2_000_000, 4)) * sigma
    sampled = 0.5 * ((np_erf(x @ Wt) @ Vt - np_erf(x @ Ws) @ Vs) ** 2).sum(axis=1)
    T = [torch.tensor(a) for a in (Wt, Vt, Ws, Vs)]
    closed = population_loss(*T, sigma=sigma, psi="erf").item()
    assert abs(closed - sampled.mean()) < 4 * sampled.std() / math.sqrt(len(sampled)), (closed, sampled.mean())
    analytic = population_grad(*T, sigma=sigma, psi="erf")
    auto = population_grad(*T, sigma=sigma, psi="erf", method="autograd")
    assert len(analytic) == len(auto) == 2
    for a, b in zip(analytic, auto):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    cfg = load_config(None, ["teacher.activation=erf", "teacher.bias=0"])
    check_supported(cfg)
    assert kernel_args(cfg)["psi"] == "erf"


def test_unknown_activation_lists_the_known_ones():
    with pytest.raises(ConfigError, match="teacher.activation: must be one of 'relu', 'leaky_relu', 'linear' or 'erf' \\(got 'tanh'\\)"):
        load_config(None, ["teacher.activation=tanh"])


def test_theory_diagnostics_need_a_piecewise_linear_activation():
    with pytest.raises(ConfigError, match="theory.enabled: .*piecewise-linear"):
        load_config(None, ["teacher.activation=erf", "theory.enabled=true"])


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        activations.register(activations.get("relu"))
    assert math.isclose(activations.get("erf").derivative(torch.zeros(1, dtype=torch.float64), 0.0).item(), 2 / math.sqrt(math.pi))
