"""Streaming correlation and specialization statistics vs numpy.corrcoef and brute force."""

import numpy as np
import pytest
import torch

from studentspec.ensemble.corr import CorrAccumulator, layer_stats, rho_mean

# docs/model.md 2.3: the counts of students above 0.5, 0.6, 0.7, 0.8, 0.9 and 0.95 per teacher (the spec's list, not the code's)
SPEC_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def numpy_corr(t: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Oracle: corrcoef of the stacked columns, the [teacher, student] block, NaN (dead) -> 0."""
    m = t.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(np.concatenate([t, s], axis=1), rowvar=False)[:m, m:]
    return np.nan_to_num(c, nan=0.0)


@pytest.mark.parametrize("chunk", [1000, 7, 64])
def test_streaming_corr_matches_numpy_with_dead_units(chunk):
    g = np.random.default_rng(0)
    S, N, m, n = 3, 500, 4, 6
    t = np.maximum(g.normal(size=(S, N, m)) + 0.2, 0)
    s = np.maximum(g.normal(size=(S, N, n)) + 0.5 * t[:, :, [0, 1, 2, 3, 0, 1]], 0)
    t[1, :, 2] = 0.0  # dead teacher node
    s[0, :, 3] = 0.0  # dead student node
    s[2, :, 5] = 3.7  # constant (active but zero variance) student node
    acc = CorrAccumulator()
    for i in range(0, N, chunk):
        acc.update(torch.from_numpy(t[:, i : i + chunk]), torch.from_numpy(s[:, i : i + chunk]))
    corr = acc.corr().numpy()
    assert not np.isnan(corr).any()
    for k in range(S):
        np.testing.assert_allclose(corr[k], numpy_corr(t[k], s[k]), atol=1e-12)
    assert (corr[1, 2] == 0).all() and (corr[0, :, 3] == 0).all() and (corr[2, :, 5] == 0).all()


def test_corr_of_float32_inputs_with_large_offset_is_accurate():
    g = np.random.default_rng(1)
    t = (g.normal(size=(1, 4000, 3)) + 1e3).astype(np.float32)
    s = (t[:, :, [0, 1, 2, 0]] * 2 + g.normal(size=(1, 4000, 4)).astype(np.float32) * 0.01).astype(np.float32)
    acc = CorrAccumulator()
    for i in range(0, 4000, 512):
        acc.update(torch.from_numpy(t[:, i : i + 512]), torch.from_numpy(s[:, i : i + 512]))
    ref = numpy_corr(t[0].astype(np.float64), s[0].astype(np.float64))
    np.testing.assert_allclose(acc.corr()[0].numpy(), ref, atol=1e-9)


def test_layer_stats_brute_force():
    g = torch.Generator().manual_seed(0)
    corr = torch.rand(2, 5, 8, generator=g, dtype=torch.float64) * 2 - 1
    active = torch.tensor([[True] * 5, [True, True, False, True, True]])
    st = layer_stats(corr, active)
    assert st.teacher_counts.shape == (2, 5, len(SPEC_THRESHOLDS))
    for s in range(2):
        for j in range(5):
            row = corr[s, j].tolist()
            assert st.teacher_best[s, j] == max(row)
            assert st.teacher_best_student[s, j] == row.index(max(row))
            for i, thr in enumerate(SPEC_THRESHOLDS):
                assert st.teacher_counts[s, j, i] == sum(v > thr for v in row)
        for k in range(8):
            col = corr[s, :, k].tolist()
            assert st.student_best[s, k] == max(col) and st.student_best_teacher[s, k] == col.index(max(col))
    rm = rho_mean(st)
    assert rm[0] == pytest.approx(corr[0].max(1).values.mean().item())
    assert rm[1] == pytest.approx(corr[1].max(1).values[[0, 1, 3, 4]].mean().item())


@pytest.mark.parametrize("loss", ["half_sse", "mse"])
@pytest.mark.parametrize("batchnorm", ["none", "before"])
def test_full_batch_grad_norms_match_per_seed_autograd(batchnorm, loss):
    """grad_norm_l is of the training objective: half_sse = 1/2 sum over outputs, mean over samples; mse = (2/C) of it."""
    from studentspec.mlp.evaluate import evaluate, grad_norms
    from studentspec.mlp.nets import Net, make_batchnorms

    g = torch.Generator().manual_seed(0)
    dims = [4, 5, 3, 2]
    W = [torch.randn(2, a, b, generator=g, dtype=torch.float64) for a, b in zip(dims[:-1], dims[1:])]
    b = [torch.randn(2, n, generator=g, dtype=torch.float64) for n in dims[1:]]
    norms = make_batchnorms(2, [5, 3], False, torch.float64) if batchnorm != "none" else []
    net = Net(W, b, "leaky_relu", 0.1, batchnorm, norms)
    x, y = torch.randn(2, 37, 4, generator=g, dtype=torch.float64), torch.randn(2, 37, 2, generator=g, dtype=torch.float64)
    got = grad_norms(net, x, y, loss, chunk=10)
    for s in range(2):
        params = [p[s].clone().requires_grad_(True) for p in net.parameters()]
        h = x[s]
        for l in range(3):
            h = h @ params[2 * l] + params[2 * l + 1]
            if l < 2:
                if batchnorm == "before":
                    h = (h - norms[l].running_mean[s]) / torch.sqrt(norms[l].running_var[s] + 1e-5)
                h = torch.nn.functional.leaky_relu(h, 0.1)
        objective = 0.5 * (h - y[s]).square().sum(1).mean() if loss == "half_sse" else torch.nn.functional.mse_loss(h, y[s])
        grads = torch.autograd.grad(objective, params)
        for l in range(3):
            ref = (grads[2 * l].square().sum() + grads[2 * l + 1].square().sum()).sqrt()
            assert got[s, l].item() == pytest.approx(ref.item(), rel=1e-10)
    if batchnorm == "none":
        teacher = Net([w.clone() for w in W], [v + 0.1 for v in b], "leaky_relu", 0.1)
        res = evaluate(teacher, net, x, y, loss, chunk=10, with_grad=True)
        torch.testing.assert_close(res.grad_norm, got, rtol=1e-10, atol=0)
