"""The training objectives pinned to their equations (docs/model.md section 1), not to another implementation.

Objectives, with d = f(x) - f*(x) per sample and a batch of B samples:
  half_sse: 1/2 sum_c d_c^2, mean over the batch (the paper's J; the original two-layer code);
  mse:      mean over the batch and the C outputs = (2/C) J (nn.MSELoss; the original deep code);
  ce:       cross-entropy to argmax f*(x), mean over the batch.
One SGD step of train() -- torch path and compiled path -- is checked against the update
equation written out in NumPy, e.g. for half_sse in two layers
  V~ <- V~ + lr/B H~^T (Y* - Y),   W~ <- W~ + lr/B X~^T [((Y* - Y) V^T) * psi'(Z)],
and for mse the same times 2/C; deeper nets apply the same recursion layer by layer.
"""

import numpy as np
import pytest
import torch

from studentspec import load_config
from studentspec.mlp import backprop
from studentspec import train
from studentspec.config import ConfigError
from studentspec.ensemble.losses import LOSSES, j_scale, output_grad, per_seed_loss, sample_grad
from studentspec.mlp.nets import Net
from studentspec.theory.population import check_supported, population_grad
from studentspec.mlp.train import build

from conftest import needs_kernel

C = 5  # outputs: mse's 2/C = 0.4 separates it clearly from half_sse
# docs/model.md 1.6: J (half_sse), nn.MSELoss (mse) and cross-entropy against the teacher's argmax (ce): the spec's list,
# so a loss the code drops from its LOSSES fails here instead of silently leaving the parametrization
SPEC_LOSSES = ["half_sse", "mse", "ce"]


def _cfg(loss: str, activation: str, widths: list[int], kernel: str):
    return load_config(None, [
        "seeds=[1,2]", "input_dim=7", f"output_dim={C}", f"teacher.widths={widths}", f"teacher.activation={activation}",
        "student.multi=2", "student.init_std=0.5", "data.n_train=40", "data.n_eval=20", f"train.loss={loss}",
        "train.lr=0.1", "train.batch_size=8", "train.steps_per_epoch=1", "train.epochs=1", "train.threads=1",
        f"train.kernel={kernel}", "eval.grad_norm=true"])


def _np_forward(Ws, bs, X, activation, slope=0.1):
    """Inputs of every layer (X, H_1, ...), hidden pre-activations Z_l and the output, NumPy."""
    inputs, zs, h = [X], [], X
    for l, (W, b) in enumerate(zip(Ws, bs)):
        z = h @ W + b
        if l < len(Ws) - 1:
            zs.append(z)
            h = np.maximum(z, 0.0) if activation == "relu" else np.where(z > 0, z, slope * z)
            inputs.append(h)
    return inputs, zs, z


def _np_top_signal(Y, Ystar, loss):
    """The descent direction at the output, per sample: -d loss(x) / d f, [B, C]."""
    if loss == "half_sse":
        return Ystar - Y
    if loss == "mse":
        return (2.0 / Y.shape[1]) * (Ystar - Y)
    p = np.exp(Y - Y.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.eye(Y.shape[1])[Ystar.argmax(axis=1)]
    return onehot - p


def _np_sample_loss(Y, Ystar, loss):
    if loss == "half_sse":
        return 0.5 * ((Y - Ystar) ** 2).sum(axis=1)
    if loss == "mse":
        return ((Y - Ystar) ** 2).mean(axis=1)
    logp = Y - Y.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(Y)), Ystar.argmax(axis=1)]


def _np_descent(Ws, bs, X, Ystar, loss, activation, slope=0.1):
    """Per layer (the mean over the batch of) -d loss / d W~_l, as ([dW], [db]) in NumPy:
    Delta_L = top signal, update lr/B H~_{l-1}^T Delta_l, Delta_{l-1} = (Delta_l W_l^T) * psi'(Z_{l-1})."""
    inputs, zs, Y = _np_forward(Ws, bs, X, activation, slope)
    delta = _np_top_signal(Y, Ystar, loss)
    B = X.shape[0]
    dW, db = [None] * len(Ws), [None] * len(Ws)
    for l in range(len(Ws) - 1, -1, -1):
        dW[l], db[l] = inputs[l].T @ delta / B, delta.sum(axis=0) / B
        if l > 0:
            gate = np.where(zs[l - 1] > 0, 1.0, 0.0 if activation == "relu" else slope)
            delta = (delta @ Ws[l].T) * gate
    return dW, db


KERNELS = ["torch", pytest.param("c", marks=needs_kernel)]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("loss", SPEC_LOSSES)
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("widths", [[3], [3, 4, 2]])
def test_one_sgd_step_of_train_follows_the_update_equation(widths, activation, loss, kernel):
    cfg = _cfg(loss, activation, widths, kernel)
    s = build(cfg)
    idx = build(cfg).stream.indices(0)[0].numpy()  # [S, B]: the same generators, so the batch train() draws
    x, y = s.stream.x_train.numpy(), s.stream.y_train.numpy()
    W0 = [w.detach().numpy().copy() for w in s.student.weights]
    b0 = [b.detach().numpy().copy() for b in s.student.biases]
    res = train(cfg, progress=False, setup=s)
    assert res.kernel == kernel
    lr = 0.1
    first_train = next(p for p in res.evals if p.step == 0 and p.split == "train")
    for seed in range(2):
        Ws, bs = [w[seed] for w in W0], [b[seed] for b in b0]
        dW, db = _np_descent(Ws, bs, x[seed, idx[seed]], y[seed, idx[seed]], loss, activation)
        for l in range(len(Ws)):
            step = lr * dW[l]
            assert np.abs(step).max() > 1e-3  # the step is far above the tolerance: the comparison means something
            np.testing.assert_allclose(s.student.weights[l][seed].detach().numpy(), Ws[l] + step, rtol=0, atol=1e-12)
            np.testing.assert_allclose(s.student.biases[l][seed].detach().numpy(), bs[l] + lr * db[l], rtol=0, atol=1e-12)
        # the stored `loss` and grad_norm_l at step 0: the same objective on the whole training set
        Y = _np_forward(Ws, bs, x[seed], activation)[2]
        assert first_train.result.loss[seed].item() == pytest.approx(_np_sample_loss(Y, y[seed], loss).mean(), rel=1e-12)
        assert first_train.result.mse[seed].item() == pytest.approx(((Y - y[seed]) ** 2).mean(), rel=1e-12)
        fW, fb = _np_descent(Ws, bs, x[seed], y[seed], loss, activation)
        norms = [np.sqrt((gw**2).sum() + (gb**2).sum()) for gw, gb in zip(fW, fb)]
        np.testing.assert_allclose(first_train.grad_norm[seed].numpy(), norms, rtol=1e-10)


@pytest.mark.parametrize("loss", SPEC_LOSSES)
def test_loss_functions_agree_with_each_other_and_the_equation(loss):
    g = torch.Generator().manual_seed(3)
    out, y = torch.randn(2, 6, C, generator=g, dtype=torch.float64), torch.randn(2, 6, C, generator=g, dtype=torch.float64)
    value, grad = output_grad(out.clone(), y, loss)
    for s in range(2):
        o, t = out[s].numpy(), y[s].numpy()
        assert value[s].item() == pytest.approx(_np_sample_loss(o, t, loss).mean(), rel=1e-13)
        np.testing.assert_allclose(grad[s].numpy(), -_np_top_signal(o, t, loss) / 6, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(sample_grad(out.clone(), y, loss)[s].numpy(), -_np_top_signal(o, t, loss), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(per_seed_loss(out, y, loss), value, rtol=1e-13, atol=0)


def test_j_scale_and_unknown_loss():
    assert list(LOSSES) == SPEC_LOSSES
    assert j_scale("half_sse", 50) == 1.0 and j_scale("mse", 50) == 2.0 / 50 and j_scale("ce", 50) is None
    with pytest.raises(ValueError, match="unknown loss 'l1'.*half_sse, mse, ce"):
        per_seed_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), "l1")
    with pytest.raises(ConfigError, match="train.loss: must be one of"):
        load_config(None, ["train.loss=sse"])
    assert load_config(None, []).train.loss == "half_sse"  # the paper's J is the default


@pytest.mark.parametrize("loss", ["half_sse", "mse"])
def test_population_gradient_is_the_expected_training_gradient(loss):
    """E_x of the training gradient (Monte Carlo over 1e6 Gaussian samples, the trainer's own
    backward on a bias-free net) equals the closed-form population gradient of the same objective:
    half_sse = J = 1/2 E ||f* - f||^2 (arc-cosine kernel, population.py), mse = (2/C) J. The trainer's
    per-batch gradient of each objective is pinned to the NumPy update equation above."""
    g = torch.Generator().manual_seed(5)
    d, m, n, sigma = 4, 2, 3, 1.3
    W_t, V_t = torch.randn(d, m, generator=g, dtype=torch.float64), torch.randn(m, C, generator=g, dtype=torch.float64)
    W_s, V_s = torch.randn(d, n, generator=g, dtype=torch.float64), torch.randn(n, C, generator=g, dtype=torch.float64)
    x = sigma * torch.randn(1, 10**6, d, generator=g, dtype=torch.float64)
    zero = lambda k: torch.zeros(1, k, dtype=torch.float64)  # noqa: E731
    teacher = Net([W_t[None], V_t[None]], [zero(m), zero(C)], "relu", 0.1)
    student = Net([W_s[None], V_s[None]], [zero(n), zero(C)], "relu", 0.1)
    y = teacher.forward(x)[0]
    _, grads = backprop.loss_and_grads(student, x, y, loss)
    gW, gV = population_grad(W_t, V_t, W_s, V_s, sigma=sigma, loss=loss)
    for mc, exact in ((grads[0][0], gW), (grads[2][0], gV)):
        assert (mc - exact).norm() < 0.02 * exact.norm()  # MC error ~ 1e-3; mse vs half_sse differ by 60 %


def test_population_refuses_cross_entropy():
    cfg = load_config(None, ["teacher.bias=0", "train.loss=ce"])
    with pytest.raises(ConfigError, match="train.loss: population loss has a closed form for half_sse and mse"):
        check_supported(cfg)
