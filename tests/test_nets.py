"""Batched ensemble nets and the hand-derived backward vs per-seed nn.Modules, autograd, finite differences."""

import pytest
import torch

from studentspec.mlp import backprop
from studentspec.ensemble import losses
from studentspec.ensemble.losses import per_seed_loss
from studentspec.mlp.nets import Net, make_batchnorms

torch.set_default_dtype(torch.float64)


def random_net(widths, activation, S=3, d=6, C=4, seed=0, batchnorm="none", affine=False):
    g = torch.Generator().manual_seed(seed)
    dims = [d, *widths, C]
    W = [torch.randn(S, a, b, generator=g) for a, b in zip(dims[:-1], dims[1:])]
    b = [torch.randn(S, n, generator=g) * 0.3 for n in dims[1:]]
    norms = make_batchnorms(S, widths, affine, torch.float64) if batchnorm != "none" else []
    for bn in norms:
        if bn.weight is not None:
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=g))
    return Net(W, b, activation, 0.1, batchnorm, norms)


def reference_module(net: Net, s: int) -> torch.nn.Sequential:
    """A plain per-seed nn.Module holding seed s's weights (nn.Linear stores W transposed)."""
    layers: list[torch.nn.Module] = []
    depth = len(net.weights)
    for l in range(depth):
        lin = torch.nn.Linear(net.weights[l].shape[1], net.weights[l].shape[2])
        with torch.no_grad():
            lin.weight.copy_(net.weights[l][s].T)
            lin.bias.copy_(net.biases[l][s])
        layers.append(lin)
        if l < depth - 1:
            act = torch.nn.ReLU() if net.activation == "relu" else torch.nn.LeakyReLU(net.slope)
            bn = None
            if net.batchnorm != "none":
                src = net.norms[l]
                bn = torch.nn.BatchNorm1d(lin.out_features, affine=src.weight is not None)
                if src.weight is not None:
                    with torch.no_grad():
                        bn.weight.copy_(src.weight[s])
                        bn.bias.copy_(src.bias[s])
            if net.batchnorm == "before":
                layers += [bn, act]
            elif net.batchnorm == "after":
                layers += [act, bn]
            else:
                layers.append(act)
    return torch.nn.Sequential(*layers)


def per_seed_reference_grads(net, x, y, kind):
    out_losses, out_grads = [], []
    for s in range(net.n_seeds):
        mod = reference_module(net, s)
        f = mod(x[s])
        if kind == "half_sse":  # the paper's J: 1/2 sum over outputs, mean over the batch
            loss = 0.5 * (f - y[s]).square().sum(dim=1).mean()
        elif kind == "mse":  # nn.MSELoss: mean over batch and outputs = (2/C) J
            loss = torch.nn.functional.mse_loss(f, y[s])
        else:
            loss = torch.nn.functional.cross_entropy(f, y[s].argmax(1))
        loss.backward()
        lins = [m for m in mod if isinstance(m, torch.nn.Linear)]
        grads = []
        for lin in lins:
            grads += [lin.weight.grad.T, lin.bias.grad]
        out_losses.append(loss.detach())
        out_grads.append(grads)
    return torch.stack(out_losses), [torch.stack([g[i] for g in out_grads]) for i in range(len(out_grads[0]))]


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("widths", [[5], [5, 7, 6, 4]])
def test_forward_matches_per_seed_module(activation, widths):
    net = random_net(widths, activation)
    x = torch.randn(3, 11, 6)
    out, hidden = net.forward(x)
    assert len(hidden) == len(widths)
    for s in range(3):
        torch.testing.assert_close(out[s], reference_module(net, s)(x[s]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["half_sse", "mse", "ce"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("widths", [[5], [5, 7, 6, 4]])
def test_hand_backward_matches_per_seed_autograd(kind, activation, widths):
    net = random_net(widths, activation)
    x, y = torch.randn(3, 9, 6), torch.randn(3, 9, 4)
    loss, grads = backprop.loss_and_grads(net, x, y, kind)
    ref_loss, ref_grads = per_seed_reference_grads(net, x, y, kind)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("widths", [[4], [4, 5, 3, 4]])
def test_hand_backward_matches_finite_differences(activation, widths):
    net = random_net(widths, activation, S=2, seed=3)
    x, y = torch.randn(2, 5, 6), torch.randn(2, 5, 4)
    _, grads = backprop.loss_and_grads(net, x, y, "mse")
    params = net.parameters()
    assert len(params) == len(grads) == 2 * (len(widths) + 1)
    eps = 1e-6
    g = torch.Generator().manual_seed(1)
    for p, gp in zip(params, grads):
        for _ in range(4):
            idx = tuple(int(torch.randint(0, n, (1,), generator=g)) for n in p.shape)
            old = p[idx].item()
            p[idx] = old + eps
            up = per_seed_loss(net.forward(x)[0], y, "mse")
            p[idx] = old - eps
            down = per_seed_loss(net.forward(x)[0], y, "mse")
            p[idx] = old
            fd = (up - down)[idx[0]] / (2 * eps)  # other seeds' losses do not depend on this weight
            assert abs(fd - gp[idx]) < 1e-6 * max(1.0, abs(fd)), (idx, fd, gp[idx])
            assert torch.equal(up[[i for i in range(2) if i != idx[0]]], down[[i for i in range(2) if i != idx[0]]])


def test_fused_sgd_update_equals_gradient_step():
    net = random_net([5, 6], "relu", seed=4)
    x, y = torch.randn(3, 8, 6), torch.randn(3, 8, 4)
    _, grads = backprop.loss_and_grads(net, x, y, "mse")
    expected = [p - 0.05 * g for p, g in zip(net.parameters(), grads)]
    tr = net.trace(x)
    out, hs, zs = tr.out, tr.inputs, tr.pre
    _, gout = losses.output_grad(out, y, "mse")
    assert backprop.backward(net, hs, zs, gout, sgd_lr=0.05) == []
    for p, e in zip(net.parameters(), expected):
        torch.testing.assert_close(p, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("affine", [False, True])
def test_batchnorm_matches_torch_in_train_and_eval(where, affine):
    net = random_net([5, 4], "relu", batchnorm=where, affine=affine)
    x = torch.randn(3, 10, 6)
    mods = [reference_module(net, s) for s in range(3)]
    out, _ = net.forward(x, training=True)  # updates running stats like BatchNorm1d.train()
    for s, mod in enumerate(mods):
        mod.train()
        torch.testing.assert_close(out[s], mod(x[s]), rtol=1e-10, atol=1e-10)
    out_eval, _ = net.forward(x, training=False)
    for s, mod in enumerate(mods):
        mod.eval()
        torch.testing.assert_close(out_eval[s], mod(x[s]), rtol=1e-10, atol=1e-10)


def test_batchnorm_autograd_matches_per_seed_module():
    net = random_net([5, 4], "leaky_relu", batchnorm="before", affine=True)
    x, y = torch.randn(3, 10, 6), torch.randn(3, 10, 4)
    params = [t.requires_grad_() for t in net.parameters()]
    out, _ = net.forward(x, training=True)
    grads = torch.autograd.grad(per_seed_loss(out, y, "mse").sum(), params)
    for s in range(3):
        mod = reference_module(net, s)
        torch.nn.functional.mse_loss(mod(x[s]), y[s]).backward()
        lins = [m for m in mod if isinstance(m, torch.nn.Linear)]
        torch.testing.assert_close(grads[0][s], lins[0].weight.grad.T, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grads[5][s], lins[2].bias.grad, rtol=1e-10, atol=1e-12)
        bns = [m for m in mod if isinstance(m, torch.nn.BatchNorm1d)]
        torch.testing.assert_close(grads[6][s], bns[0].weight.grad, rtol=1e-10, atol=1e-12)
