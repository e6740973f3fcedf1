"""eval.dtype: a float64 run evaluated in float32 (sums in float64), against a NumPy float64 oracle of docs/model.md 2.

Objective: train.loss = half_sse, the paper's J = (1/N) sum_n 1/2 ||f(x_n) - y_n||^2 over the N samples of a split;
its full-batch gradient is written out below for the two-layer ReLU net (no code of the package computes the oracle).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studentspec.config import ConfigError
from studentspec.mlp.evaluate import evaluate
from studentspec.mlp.train import build, train
from studentspec.pipelines import load_config

BASE = ["input_dim=8", "output_dim=4", "teacher.widths=[3]", "student.multi=2", "data.n_train=600", "data.n_eval=500",
        "train.epochs=2", "train.steps_per_epoch=50", "train.lr=0.05", "eval.batch_size=64", "train.loss=half_sse"]


def numpy_metrics(w1, b1, w2, b2, tw1, tb1, x, y):
    """Oracle for one seed: MSE (mean over samples and outputs), corr [m, n] (numpy.corrcoef) and the gradient norm
    of J per layer, sqrt(||dJ/dW_l||^2 + ||dJ/db_l||^2), in float64."""
    z = x @ w1 + b1
    h = np.maximum(z, 0)
    r = h @ w2 + b2 - y
    n = x.shape[0]
    t = np.maximum(x @ tw1 + tb1, 0)
    m = t.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(np.concatenate([t, h], axis=1), rowvar=False)[:m, m:])
    dout = r / n  # dJ/d(output) of J = (1/N) sum 1/2 ||r||^2
    dw2, db2 = h.T @ dout, dout.sum(0)
    dz = (dout @ w2.T) * (z > 0)
    dw1, db1 = x.T @ dz, dz.sum(0)
    norms = [np.sqrt((dw1**2).sum() + (db1**2).sum()), np.sqrt((dw2**2).sum() + (db2**2).sum())]
    return float((r**2).mean()), corr, np.array(norms)


@pytest.mark.parametrize("extra", [[], ["train.kernel=torch", "train.momentum=0.9"]], ids=["compiled", "torch-path"])
@pytest.mark.parametrize("eval_dtype,rtol", [("float64", 1e-10), ("float32", 2e-5)])
def test_evaluation_matches_numpy_float64(extra, eval_dtype, rtol):
    cfg = load_config(None, [*BASE, "seeds=[1,2]", f"eval.dtype={eval_dtype}", *extra])
    s = build(cfg)
    result = train(s)
    last = [p for p in result.evals if p.step == result.steps]
    student = [[t.detach().numpy() for t in (w, b)] for w, b in zip(s.student.weights, s.student.biases)]
    teacher = [t.numpy() for t in (s.teacher.weights[0], s.teacher.biases[0])]
    for point, x, y in ((last[0], s.stream.x_train, s.stream.y_train), (last[1], s.x_eval, s.y_eval)):
        assert point.result.path == ("torch" if extra else "c")
        for k in range(2):
            mse, corr, norms = numpy_metrics(student[0][0][k], student[0][1][k], student[1][0][k], student[1][1][k],
                                             teacher[0][k], teacher[1][k], x[k].numpy(), y[k].numpy())
            assert point.result.mse[k].item() == pytest.approx(mse, rel=rtol)
            np.testing.assert_allclose(point.result.layers[0].corr[k].numpy(), corr, rtol=0, atol=max(rtol, 1e-12) * 10)
            if point.split == "train":
                np.testing.assert_allclose(point.grad_norm[k].numpy(), norms, rtol=rtol)
    if eval_dtype == "float32":  # the float32 pass really ran: its numbers are not the float64 ones
        ref = train(build(load_config(None, [*BASE, "seeds=[1,2]", *extra])))
        assert not torch.equal(ref.evals[-1].result.mse, result.evals[-1].result.mse)
        assert torch.equal(ref.setup.student.weights[0], s.student.weights[0])  # evaluation never touches training


def test_float32_gradient_is_summed_in_float64():
    """Many chunks (eval.batch_size 1, 4000 samples): a float32 running sum of 4000 gradients drifts by ~1e-6
    relative; the float64 sum of float32 per-sample gradients stays within ~1e-7 of the float64 oracle."""
    cfg = load_config(None, [*BASE, "seeds=[3]", "data.n_train=4000", "train.epochs=0", "eval.batch_size=1", "eval.dtype=float32"])
    s = build(cfg)
    st = s.student.to(torch.device("cpu"), torch.float32)
    tt = s.teacher_run.to(torch.device("cpu"), torch.float32)
    x, y = s.stream.x_train.float(), s.stream.y_train.float()
    w = [t.detach().numpy()[0] for pair in zip(s.student.weights, s.student.biases) for t in pair]
    _, _, norms = numpy_metrics(*w, s.teacher.weights[0][0].numpy(), s.teacher.biases[0][0].numpy(), s.stream.x_train[0].numpy(),
                                s.stream.y_train[0].numpy())
    for kernel in ("c", "torch"):
        got = evaluate(tt, st, x, y, loss_kind="half_sse", chunk=1, with_grad=True, kernel=kernel).grad_norm[0].numpy()
        np.testing.assert_allclose(got, norms, rtol=2e-7)  # measured: 4e-8 (float64 sum), 1.2e-6 (float32 sum)


def test_float32_evaluation_is_the_same_alone_and_in_an_ensemble():
    alone = train(build(load_config(None, [*BASE, "seeds=[2]", "eval.dtype=float32"])))
    ens = train(build(load_config(None, [*BASE, "seeds=[1,2,3]", "eval.dtype=float32"])))
    for a, e in zip(alone.evals, ens.evals):
        assert torch.equal(a.result.mse[0], e.result.mse[1])
        assert torch.equal(a.result.layers[0].corr[0], e.result.layers[0].corr[1])
        if a.grad_norm is not None:
            assert torch.equal(a.grad_norm[0], e.grad_norm[1])


def test_eval_dtype_values_and_pipelines():
    with pytest.raises(ConfigError, match="eval.dtype"):
        load_config(None, ["eval.dtype=float16"])
    with pytest.raises(ConfigError, match="eval.dtype: image runs"):
        load_config(None, ["data.kind=cifar10", "data.root=/x", "eval.dtype=float32"])
    assert load_config(None, []).eval.dtype is None  # default: the run's own dtype (train.dtype)


def test_eval_dtype_counts_in_the_memory_estimate():
    from studentspec.mlp.memory import estimate

    plain = estimate(load_config(None, [*BASE]))["inputs"]
    f32 = estimate(load_config(None, [*BASE, "eval.dtype=float32"]))["inputs"]
    assert f32 - plain == 3 * (600 + 500) * (8 + 4) * 4  # 3 seeds x rows x (d + C) x 4 bytes
