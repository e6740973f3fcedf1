"""Theory diagnostics vs autograd on per-sample losses, brute-force counts and scipy."""

import itertools

import numpy as np
import pytest
import torch

from studentspec.theory import lemma as theory
from studentspec.mlp.nets import Net

torch.set_default_dtype(torch.float64)


def pair(widths, activation, S=2, d=5, C=3, multi=2, seed=0):
    g = torch.Generator().manual_seed(seed)

    def net(ws):
        dims = [d, *ws, C]
        W = [torch.randn(S, a, b, generator=g) for a, b in zip(dims[:-1], dims[1:])]
        b = [torch.randn(S, n, generator=g) * 0.5 for n in dims[1:]]
        return Net(W, b, activation, 0.2)

    return net(widths), net([multi * w for w in widths])


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("widths", [[4], [3, 4, 2, 3]])
def test_lemma_signal_equals_autograd_per_sample(activation, widths):
    teacher, student = pair(widths, activation)
    x = torch.randn(2, 7, 5)
    sp, tp = theory.trace(student, x), theory.trace(teacher, x)
    # autograd oracle: pre-activations as leaves, per-sample loss 1/2 ||f* - f||^2 summed over samples
    zs, h = [], x
    for l in range(len(student.weights)):
        z = torch.baddbmm(student.biases[l][:, None, :], h, student.weights[l])
        if l == len(student.weights) - 1:
            out = z
            break
        z = z.detach().requires_grad_(True)
        zs.append(z)
        h = torch.relu(z) if activation == "relu" else torch.nn.functional.leaky_relu(z, 0.2)
    # rebuild the graph from each leaf so every layer's gradient is its own
    for layer in range(1, len(widths) + 1):
        z = zs[layer - 1].detach().requires_grad_(True)
        h = torch.relu(z) if activation == "relu" else torch.nn.functional.leaky_relu(z, 0.2)
        for l in range(layer, len(student.weights)):
            z2 = torch.baddbmm(student.biases[l][:, None, :], h, student.weights[l])
            h = z2 if l == len(student.weights) - 1 else (torch.relu(z2) if activation == "relu" else torch.nn.functional.leaky_relu(z2, 0.2))
        loss = 0.5 * (teacher.forward(x)[0] - h).square().sum()
        (grad,) = torch.autograd.grad(loss, z)
        torch.testing.assert_close(theory.backprop_signal(sp, tp, layer), -grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(sp.out, student.forward(x)[0])


def test_top_layer_mixing_is_v_vstar_transpose():
    teacher, student = pair([3], "relu")
    x = torch.randn(2, 4, 5)
    A, B = theory.mixing(theory.trace(student, x), theory.trace(teacher, x), 1)
    V, Vs = student.weights[1], teacher.weights[1]
    torch.testing.assert_close(A[:, :, :, :3], torch.einsum("skc,sjc->skj", V, Vs)[:, None].expand(-1, 4, -1, -1))
    torch.testing.assert_close(B[:, :, :, :6], torch.einsum("skc,sjc->skj", V, V)[:, None].expand(-1, 4, -1, -1))
    torch.testing.assert_close(A[:, :, :, 3], torch.einsum("skc,sc->sk", V, teacher.biases[1])[:, None].expand(-1, 4, -1))


def test_expected_mixing_is_the_mean_and_beta_diag_its_diagonal():
    teacher, student = pair([3, 4], "relu")
    x = torch.randn(2, 10, 5)
    A, B = theory.mixing(theory.trace(student, x), theory.trace(teacher, x), 2)
    EA, EB = theory.expected_mixing(teacher, student, x, 2, chunk=3)
    torch.testing.assert_close(EA, A.mean(dim=1))
    torch.testing.assert_close(EB, B.mean(dim=1))
    torch.testing.assert_close(theory.expected_beta_diag(student, x)[1], EB[:, :, :-1].diagonal(dim1=1, dim2=2).sqrt())


def test_expected_beta_diag_matches_per_sample_jacobian():
    teacher, student = pair([3, 4], "relu")
    x = torch.randn(2, 9, 5)
    got = theory.expected_beta_diag(student, x, chunk=4)
    hidden = theory.trace(student, x).hidden[0]
    jac1 = torch.stack([
        torch.stack([torch.autograd.functional.jacobian(lambda h: _above(student, s, 0, h), hidden[s, n]) for n in range(9)])
        for s in range(2)
    ])
    expected = jac1.square().sum(dim=2).mean(dim=1).sqrt()  # jac [S, N, C, n_1]
    torch.testing.assert_close(got[0], expected)


def _above(net, s, layer, h):
    """Seed s's output as a function of hidden layer `layer` (0-based) node outputs h [n]."""
    for l in range(layer + 1, len(net.weights)):
        z = h @ net.weights[l][s] + net.biases[l][s]
        h = z if l == len(net.weights) - 1 else torch.relu(z)
    return h


def test_per_sample_grad_norms_match_autograd():
    teacher, student = pair([3, 4], "leaky_relu")
    x = torch.randn(2, 6, 5)
    y = teacher.forward(x)[0]
    got = theory.per_sample_grad_norms(student, x, y, chunk=4)
    params = [p.requires_grad_(True) for p in student.parameters()]
    for s, n in itertools.product(range(2), range(6)):
        loss = 0.5 * (student.forward(x[:, n : n + 1])[0][s] - y[s, n]).square().sum()
        grads = torch.autograd.grad(loss, params)
        for l in range(3):
            ref = (grads[2 * l][s].square().sum() + grads[2 * l + 1][s].square().sum()).sqrt()
            assert got[s, n, l].item() == pytest.approx(ref.item(), rel=1e-10)
    summary = theory.grad_norm_summary(got)
    torch.testing.assert_close(summary["max"], got.max(dim=1).values)
    torch.testing.assert_close(summary["q0.5"], got.quantile(0.5, dim=1))


def test_observation_brute_force():
    teacher, student = pair([3], "relu")
    x = torch.randn(2, 50, 5)
    obs, near = theory.observation(teacher, student, x, near=0.3)
    for s, j, k in itertools.product(range(2), range(3), range(6)):
        t_on = [float(xx @ teacher.weights[0][s, :, j] + teacher.biases[0][s, j]) > 0 for xx in x[s]]
        s_on = [float(xx @ student.weights[0][s, :, k] + student.biases[0][s, k]) > 0 for xx in x[s]]
        both = sum(a and b for a, b in zip(t_on, s_on))
        only = sum((not a) and b for a, b in zip(t_on, s_on))
        assert obs[s, j, k] == min(both, only)
    w, b = teacher.weights[0][0, :, 1], teacher.biases[0][0, 1]
    dist = (x[0] @ w + b).abs() / w.norm()
    assert near[0, 1].item() == pytest.approx((dist < 0.3).double().mean().item())


def test_alignment_and_hungarian():
    teacher, student = pair([3], "relu")
    with torch.no_grad():
        student.weights[0][:, :, 4] = 2.5 * teacher.weights[0][:, :, 1]
        student.biases[0][:, 4] = 2.5 * teacher.biases[0][:, 1]
        student.weights[0][:, :, 2] = -teacher.weights[0][:, :, 0]
        student.biases[0][:, 2] = -teacher.biases[0][:, 0]
    ang = theory.alignment(teacher, student)
    assert ang[:, 1, 4].abs().max() < 1e-5 and (ang[:, 0, 2] - 180).abs().max() < 1e-5
    score = torch.tensor([[[0.9, 0.8, 0.1], [0.85, 0.2, 0.3]]])  # greedy gives teacher 0 and 1 the same student
    from scipy.optimize import linear_sum_assignment

    match = theory.hungarian(score)
    rows, cols = linear_sum_assignment(score[0].numpy(), maximize=True)
    assert match.tolist() == [list(cols)] and match.tolist() == [[1, 0]]
    assert np.isclose(score[0, [0, 1], match[0]].sum().item(), 1.65)


def test_theory_diagnostics_are_stored_and_plotted(tmp_path):
    from studentspec import load_config, load_run, write_run
    from studentspec import train
    from studentspec.paper.figures import plot_run

    cfg = load_config(None, ["seeds=[1,2]", "input_dim=6", "output_dim=3", "teacher.widths=[3,2]", "student.multi=2", "data.n_train=120",
                             "data.n_eval=60", "train.steps_per_epoch=10", "train.epochs=2", "theory.enabled=true", "theory.samples=50"])
    result = train(cfg, progress=False)
    run = load_run(write_run(result, tmp_path / "run"))
    tr = run.scalars[run.scalars.split == "train"]
    assert len(tr) == 3 * 2  # evaluations at steps 0, 10, 20 for 2 seeds: the column checks below see rows
    assert tr[["ps_grad_max_1", "ps_grad_max_3", "ps_grad_q0.99_2"]].notna().all().all()
    assert (tr["ps_grad_max_1"] >= tr["ps_grad_mean_1"]).all()
    last = run.students[(run.students.split == "train") & (run.students.step == 20)].sort_values(["seed", "layer", "student"])
    x = result.setup.stream.x_train[:, :50]
    expected = theory.expected_beta_diag(result.setup.student, x)
    np.testing.assert_allclose(last[last.layer == 2].beta_norm.to_numpy(), expected[1].detach().numpy().ravel())
    low = run.teachers[(run.teachers.split == "train") & (run.teachers.layer == 1)]
    assert len(low) == 3 * 2 * 3  # 3 evaluations x 2 seeds x 3 teacher nodes
    assert low[["observed", "near_boundary", "min_angle", "hungarian_student"]].notna().all().all()
    final = low[low.step == 20]
    assert sorted(final.seed.unique()) == [1, 2]
    for seed, g in final.groupby("seed"):
        assert len(g) == 3 and g["hungarian_student"].is_unique
    assert (tmp_path / "figs" / "theory.png") in plot_run(run, tmp_path / "figs")


def test_theory_with_batchnorm_is_a_config_error():
    from studentspec import ConfigError, load_config

    with pytest.raises(ConfigError, match="^theory.enabled: .*BatchNorm"):
        load_config(None, ["theory.enabled=true", "teacher.batchnorm=after"])
