"""The compiled SGD step (ckernel) against an autograd oracle: plain per-seed torch.nn.Modules and torch.optim.SGD."""

import pytest
import torch

from studentspec import ConfigError, load_config
from studentspec.mlp import kernel as ckernel
from studentspec import train
from studentspec.mlp.nets import Net



def _net(S: int, widths: list[int], activation: str, gen: torch.Generator, dtype: torch.dtype = torch.float64) -> Net:
    weights = [torch.randn(S, a, b, generator=gen, dtype=dtype) / a**0.5 for a, b in zip(widths, widths[1:])]
    biases = [0.1 * torch.randn(S, b, generator=gen, dtype=dtype) for b in widths[1:]]
    return Net(weights, biases, activation, 0.1, "none", [])


def _module(net: Net, s: int) -> torch.nn.Sequential:
    """Seed s of the ensemble as a plain nn.Sequential (nn.Linear keeps W transposed)."""
    layers: list[torch.nn.Module] = []
    for l, (w, b) in enumerate(zip(net.weights, net.biases)):
        lin = torch.nn.Linear(w.shape[1], w.shape[2], dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w[s].T)
            lin.bias.copy_(b[s])
        layers.append(lin)
        if l < len(net.weights) - 1:
            layers.append({"relu": torch.nn.ReLU(), "leaky_relu": torch.nn.LeakyReLU(net.slope), "linear": torch.nn.Identity()}[net.activation])
    return torch.nn.Sequential(*layers)


def _oracle_loss(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """One seed's objective on a batch [B, C], written out (docs/model.md section 1)."""
    if loss == "half_sse":  # the paper's J: 1/2 sum over outputs, mean over the batch
        return 0.5 * (out - y).square().sum(dim=1).mean()
    if loss == "mse":  # nn.MSELoss's convention: mean over batch and outputs = (2/C) J
        return (out - y).square().mean()
    label = y.argmax(dim=1, keepdim=True)  # cross-entropy to the teacher's argmax: logsumexp - the label's logit
    return (torch.logsumexp(out, dim=1) - out.gather(1, label)[:, 0]).mean()


from conftest import KERNEL_MISSING, KERNEL_REQUIRED, needs_kernel  # noqa: E402


@pytest.mark.skipif(not KERNEL_REQUIRED, reason="STUDENTSPEC_REQUIRE_KERNEL=1 is not set (.ci/run sets it on x86-64 Linux)")
def test_the_kernel_builds_where_required():
    assert not KERNEL_MISSING, f"the compiled step did not build: {KERNEL_MISSING}"


CASES = [
    ([100, 100, 50], 16, "relu", "half_sse"),  # the paper's two-layer shape and objective: full tiles plus an edge
    ([100, 100, 50], 16, "relu", "mse"),
    ([7, 13, 5], 5, "leaky_relu", "mse"),  # every dimension an edge case
    ([9, 30, 21, 11, 6], 3, "relu", "ce"),  # deep, batch below one tile
    ([5, 3], 7, "relu", "mse"),  # no hidden layer
    ([8, 11, 6, 9, 4], 5, "leaky_relu", "half_sse"),  # three hidden layers
    ([20, 17, 19, 23], 24, "leaky_relu", "ce"),  # batch 24: the narrow 6 x 8 float64 tiles for the signal below
    ([12, 40, 9], 32, "relu", "mse"),  # batch 32: the narrow 6 x 16 float32 tiles
    ([30, 56, 48], 16, "relu", "half_sse"),  # edge panels of exactly one vector (8 x VL tiles, unmasked) or two
    ([7, 13, 6, 5], 5, "linear", "half_sse"),  # identity: Leaky ReLU's code at a = 1 (the net's slope 0.1 must not leak in)
]
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-13), torch.float32: dict(rtol=2e-5, atol=2e-6)}


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("widths,batch,activation,loss", CASES)
def test_compiled_step_matches_autograd_per_seed(widths, batch, activation, loss, dtype):
    gen = torch.Generator().manual_seed(sum(widths) + batch)
    S, lr, steps = 3, 0.05, 4
    net = _net(S, widths, activation, gen, dtype)
    oracles = [_module(net, s) for s in range(S)]
    opts = [torch.optim.SGD(m.parameters(), lr=lr) for m in oracles]
    step = ckernel.CompiledMLP(net, loss)
    for _ in range(steps):
        x = torch.randn(S, batch, widths[0], generator=gen, dtype=dtype)
        y = torch.randn(S, batch, widths[-1], generator=gen, dtype=dtype)
        got = step(x, y, lr, torch.ones(S, dtype=torch.bool)).clone()
        for s, (m, opt) in enumerate(zip(oracles, opts)):
            opt.zero_grad()
            value = _oracle_loss(m(x[s]), y[s], loss)
            value.backward()
            opt.step()
            torch.testing.assert_close(got[s], value.detach().double(), **TOL[dtype])
    for s, m in enumerate(oracles):
        lins = [mod for mod in m if isinstance(mod, torch.nn.Linear)]
        for l, lin in enumerate(lins):
            torch.testing.assert_close(net.weights[l][s], lin.weight.detach().T, **TOL[dtype])
            torch.testing.assert_close(net.biases[l][s], lin.bias.detach(), **TOL[dtype])


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("threads", [1, 2])
def test_seed_alone_equals_seed_inside_ensemble_bitwise(threads, dtype):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(1)
        widths = [10, 30, 4]
        big = _net(5, widths, "relu", gen, dtype)
        alone = Net([w[2:3].clone() for w in big.weights], [b[2:3].clone() for b in big.biases], "relu", 0.1, "none", [])
        x = torch.randn(5, 16, 10, generator=gen, dtype=dtype)
        y = torch.randn(5, 16, 4, generator=gen, dtype=dtype)
        for _ in range(3):
            ckernel.CompiledMLP(big, "mse")(x, y, 0.1, torch.ones(5, dtype=torch.bool))
            ckernel.CompiledMLP(alone, "mse")(x[2:3], y[2:3], 0.1, torch.ones(1, dtype=torch.bool))
        for a, b in zip(alone.weights + alone.biases, big.weights + big.biases):
            assert torch.equal(a[0], b[2])
    finally:
        torch.set_num_threads(old)


@needs_kernel
def test_non_finite_and_dead_seeds_keep_their_parameters():
    gen = torch.Generator().manual_seed(2)
    net = _net(3, [6, 8, 2], "relu", gen)
    before = [t.clone() for t in net.weights + net.biases]
    x = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 4, 2, generator=gen, dtype=torch.float64)
    x[1, 0, 0] = float("inf")  # seed 1's loss is not finite
    alive = torch.tensor([True, True, False])  # seed 2 died earlier
    loss = ckernel.CompiledMLP(net, "mse")(x, y, 0.1, alive)
    assert torch.isfinite(loss[0]) and not torch.isfinite(loss[1]) and torch.isnan(loss[2])
    for old, new in zip(before, net.weights + net.biases):
        assert not torch.equal(old[0], new[0])
        assert torch.equal(old[1], new[1]) and torch.equal(old[2], new[2])


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("threads", [1, 2])
def test_block_of_steps_equals_step_after_step_bitwise(threads, dtype):
    """indexed_steps (a seed's T steps back to back) against T indexed() calls with the train loop's bookkeeping
    between them (a seed with a non-finite loss is marked dead): same parameters and losses, bit for bit, for a seed
    dead from the start, one whose training set turns non-finite mid-block, and the healthy rest. Objective:
    half_sse (the paper's J); the oracle is the one-step kernel, itself held to autograd above."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(5)
        widths, T, B, n_rows = [9, 23, 14, 6], 7, 5, 40
        nets = [_net(4, widths, "leaky_relu", torch.Generator().manual_seed(6), dtype) for _ in range(2)]
        x = torch.randn(4, n_rows, widths[0], generator=gen, dtype=dtype)
        y = torch.randn(4, n_rows, widths[-1], generator=gen, dtype=dtype)
        idx = torch.randint(0, n_rows - 1, (T, 4, B), generator=gen)
        x[1, n_rows - 1] = float("inf")
        idx[4, 1, 2] = n_rows - 1  # seed 1 meets the bad row at step 4
        alive0 = torch.tensor([True, True, False, True])
        blocked = ckernel.CompiledMLP(nets[0], "half_sse").indexed_steps(x, y, idx, lr=0.05, alive=alive0.clone())
        step, alive, losses = ckernel.CompiledMLP(nets[1], "half_sse"), alive0.clone(), []
        for t in range(T):
            losses.append(step.indexed(x, y, idx[t], lr=0.05, alive=alive).clone())
            alive &= torch.isfinite(losses[-1])
        assert blocked.shape == (T, 4) and torch.equal(blocked.isnan(), torch.stack(losses).isnan())
        assert torch.equal(blocked.nan_to_num(), torch.stack(losses).nan_to_num())
        assert torch.isfinite(blocked[:4, 1]).all() and not torch.isfinite(blocked[4:, 1]).any()
        assert torch.isnan(blocked[:, 2]).all() and torch.isfinite(blocked[:, [0, 3]]).all()
        for a, b in zip(nets[0].parameters(), nets[1].parameters()):
            assert torch.equal(a, b)
    finally:
        torch.set_num_threads(old)


TINY = ["seeds=[1,2]", "input_dim=8", "output_dim=5", "teacher.widths=[3]", "student.multi=2", "data.n_train=200",
        "data.n_eval=100", "train.steps_per_epoch=20", "train.epochs=2", "train.lr=0.05"]


@needs_kernel
def test_train_uses_the_compiled_step_where_it_applies_and_agrees_with_torch():
    c = train(load_config(None, TINY), progress=False)
    t = train(load_config(None, [*TINY, "train.kernel=torch"]), progress=False)
    f32 = train(load_config(None, [*TINY, "train.dtype=float32"]), progress=False)
    mom = train(load_config(None, [*TINY, "train.momentum=0.5"]), progress=False)
    bn = train(load_config(None, [*TINY, "teacher.batchnorm=before"]), progress=False)
    assert (c.kernel, t.kernel, f32.kernel, mom.kernel, bn.kernel) == ("c", "torch", "c", "torch", "torch")
    for a, b in zip(c.setup.student.parameters(), t.setup.student.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_asking_for_the_compiled_step_where_it_cannot_run_is_a_config_error():
    with pytest.raises(ConfigError, match="train.kernel: c cannot run here: only plain SGD"):
        train(load_config(None, [*TINY, "train.kernel=c", "train.momentum=0.9"]), progress=False)


def test_no_compiler_falls_back_with_a_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(ckernel, "_load", ckernel._load.__wrapped__)  # uncached, so the environment below counts
    monkeypatch.setenv("STUDENTSPEC_CACHE", str(tmp_path))
    monkeypatch.setattr(ckernel, "_compiler", lambda: "/bin/false")
    dll, why = ckernel._load()
    if not ckernel._cpu_ok():
        assert dll is None and "AVX2" in why
        return
    assert dll is None and why.startswith("compiling sgd_step.c failed")
    assert list(tmp_path.iterdir()) == []  # no half-written library left behind
    monkeypatch.setenv("STUDENTSPEC_KERNEL", "torch")
    assert ckernel._load()[1] == "STUDENTSPEC_KERNEL=torch is set"


@needs_kernel
def test_indexed_step_gathers_the_same_batch_bitwise():
    gen = torch.Generator().manual_seed(3)
    a, b = _net(2, [6, 9, 3], "relu", gen), _net(2, [6, 9, 3], "relu", torch.Generator().manual_seed(3))
    x_train = torch.randn(2, 40, 6, generator=gen, dtype=torch.float64)
    y_train = torch.randn(2, 40, 3, generator=gen, dtype=torch.float64)
    alive = torch.ones(2, dtype=torch.bool)
    for _ in range(3):
        idx = torch.randint(0, 40, (2, 16), generator=gen)
        rows = torch.arange(2)[:, None]
        ckernel.CompiledMLP(a, "mse")(x_train[rows, idx], y_train[rows, idx], 0.1, alive)
        ckernel.CompiledMLP(b, "mse").indexed(x_train, y_train, idx, lr=0.1, alive=alive)
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        assert torch.equal(p, q)
    with pytest.raises(IndexError, match=r"\[0, 40\)"):
        ckernel.CompiledMLP.check_indices(torch.tensor([[0, 40]]), 40)


@needs_kernel
@pytest.mark.parametrize("activation,loss", [("relu", "mse"), ("leaky_relu", "ce"), ("linear", "half_sse")])
def test_forward_grad_matches_autograd_on_a_slice_without_touching_parameters(activation, loss):
    gen = torch.Generator().manual_seed(4)
    widths = [11, 26, 14, 7]
    net = _net(3, widths, activation, gen)
    before = [t.clone() for t in net.parameters()]
    x_all = torch.randn(3, 90, 11, generator=gen, dtype=torch.float64)
    y_all = torch.randn(3, 90, 7, generator=gen, dtype=torch.float64)
    x, y = x_all[:, 20:57], y_all[:, 20:57]  # a slice along the samples: read in place
    grads = [torch.zeros_like(p) for p in net.parameters()]
    got_loss, got_sq, hidden = ckernel.CompiledMLP(net, loss).forward_grad(x, y, hidden=True, grads=grads, gscale=0.5)
    for old, new in zip(before, net.parameters()):
        assert torch.equal(old, new)
    for s in range(3):
        m = _module(net, s)
        out = m(x[s])
        value = _oracle_loss(out, y[s], loss)
        value.backward()
        torch.testing.assert_close(got_loss[s], value.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(got_sq[s], (out - y[s]).square().sum().detach(), rtol=1e-12, atol=1e-12)
        h = x[s]
        lins = [mod for mod in m if isinstance(mod, torch.nn.Linear)]
        for l, lin in enumerate(lins):
            torch.testing.assert_close(grads[2 * l][s], 0.5 * lin.weight.grad.T, rtol=1e-11, atol=1e-13)
            torch.testing.assert_close(grads[2 * l + 1][s], 0.5 * lin.bias.grad, rtol=1e-11, atol=1e-13)
            if l < len(lins) - 1:
                h = m[2 * l + 1](lin(h))
                torch.testing.assert_close(hidden[l][s], h.detach(), rtol=1e-12, atol=1e-13)


@needs_kernel
def test_forward_grad_storage_holds_the_activations_it_would_allocate():
    """`storage` (reused by chunked evaluation) only moves where the activations are written: same bits as fresh
    tensors, returned as views of it, chunk after chunk of different sizes; a short or mistyped one is refused.
    Objective: half_sse (the paper's J); the oracle is the same pass without storage."""
    gen = torch.Generator().manual_seed(9)
    net = _net(2, [9, 21, 13, 5], "leaky_relu", gen)
    step = ckernel.CompiledMLP(net, "half_sse")
    storage = [torch.full((2 * 40 * w,), float("nan"), dtype=torch.float64) for w in (21, 13)]
    for B in (40, 17):
        x = torch.randn(2, B, 9, generator=gen, dtype=torch.float64)
        y = torch.randn(2, B, 5, generator=gen, dtype=torch.float64)
        grads, grads_s = ([torch.zeros_like(p) for p in net.parameters()] for _ in range(2))
        loss, sq, hidden = step.forward_grad(x, y, hidden=True, grads=grads, gscale=0.5)
        loss_s, sq_s, hidden_s = step.forward_grad(x, y, hidden=True, grads=grads_s, gscale=0.5, storage=storage)
        assert torch.equal(loss, loss_s) and torch.equal(sq, sq_s)
        for h, hs, buf in zip(hidden, hidden_s, storage):
            assert torch.equal(h, hs) and hs.data_ptr() == buf.data_ptr()
        for g, gs in zip(grads, grads_s):
            assert torch.equal(g, gs)
    with pytest.raises(ValueError, match="storage"):
        step.forward_grad(x, y, hidden=True, grads=None, gscale=1.0, storage=[storage[0][:10], storage[1]])
    with pytest.raises(ValueError, match="storage"):
        step.forward_grad(x, y, hidden=True, grads=None, gscale=1.0, storage=[t.float() for t in storage])


@needs_kernel
def test_evaluate_agrees_with_the_torch_path():
    from studentspec.mlp.evaluate import evaluate
    from studentspec.mlp.train import build

    s = build(load_config(None, [*TINY, "teacher.widths=[3,4]", "teacher.activation=leaky_relu"]))
    x, y = s.stream.x_train, s.stream.y_train
    a = evaluate(s.teacher_run, s.student, x, y, loss_kind="mse", chunk=64, with_grad=True, kernel="auto")
    b = evaluate(s.teacher_run, s.student, x, y, loss_kind="mse", chunk=64, with_grad=True, kernel="torch")
    for name in ("mse", "loss", "grad_norm"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-10, atol=1e-13)
    for la, lb in zip(a.layers, b.layers):
        torch.testing.assert_close(la.corr, lb.corr, rtol=1e-9, atol=1e-12)


def test_unwritable_cache_falls_back_with_a_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(ckernel, "_load", ckernel._load.__wrapped__)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("STUDENTSPEC_CACHE", str(blocker / "cache"))  # under a file: cannot be created
    dll, why = ckernel._load()
    assert dll is None
    assert why if not ckernel._cpu_ok() else why.startswith("cannot write the compiled step")


def _header_functions() -> set[str]:
    """The function names sgd_step.h declares (what the binding hands to ffi.cdef), comments left out."""
    import re

    code = re.sub(r"/\*.*?\*/", "", ckernel.declarations(), flags=re.S)
    return set(re.findall(r"\b(ss_\w+)\s*\(", code))


def _header_constants() -> dict[str, dict[str, int]]:
    """Each enum sgd_step.h declares, as {constant: value}, parsed here from the header's text (not through cffi)."""
    import re

    code = re.sub(r"/\*.*?\*/", "", ckernel.declarations(), flags=re.S)
    return {name: {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", body)}
            for name, body in re.findall(r"enum\s+(\w+)\s*\{([^}]*)\}", code)}


def test_the_c_source_includes_the_header_the_binding_declares_and_it_is_hashed():
    assert '#include "sgd_step.h"' in ckernel.SOURCE.read_text()  # so the compiler checks the definitions against it
    assert ckernel.HEADER in ckernel.SOURCES  # a changed header rebuilds
    assert _header_functions() == {"ss_workspace", "ss_sgd_step_f64", "ss_sgd_step_f32", "ss_sgd_steps_f64", "ss_sgd_steps_f32",
                                   "ss_forward_grad_f64",
                                   "ss_forward_grad_f32", "ss_corr_update_f64", "ss_corr_update_f32"}
    assert not any(line.lstrip().startswith("#") for line in ckernel.declarations().splitlines())


def test_the_registries_name_the_header_constants_and_cover_them():
    """Python holds no kernel number of its own: each loss and compiled activation names a constant of the header's
    enums, constant() reads its value through cffi (the oracle: the header's text parsed here), and every objective
    and activation the kernel declares is reachable from a registry."""
    from studentspec.ensemble import activations, losses

    enums = _header_constants()
    assert set(enums) == set(ckernel.ENUMS)
    assert set(losses.KERNEL_ENUMS) == set(losses.LOSSES)
    assert set(losses.KERNEL_ENUMS.values()) == set(enums["ss_objective"])
    kernels = {activations.get(name).kernel for name in activations.names()} - {None}
    assert kernels == set(enums["ss_activation"])
    for constants in enums.values():
        for name, value in constants.items():
            assert ckernel.constant(name) == value
    with pytest.raises(KeyError, match="SS_NOT_THERE"):
        ckernel.constant("SS_NOT_THERE")


def test_unsupported_checks_training_and_evaluation_apart():
    """None where the compiled code applies, else the reason: an optimizer only matters to training (evaluation is
    asked with optimizer None), the net, its dtype, the objective and the depth to both."""
    gen = torch.Generator().manual_seed(0)
    net = _net(2, [4, 5, 3], "relu", gen)
    avail = ckernel._load()[1] or None  # where the kernel cannot build, that is the reason left
    assert ckernel.unsupported(net, "half_sse") == avail
    assert ckernel.unsupported(net, "half_sse", "sgd") == avail
    assert ckernel.unsupported(net, "half_sse", "gd") == avail
    assert ckernel.unsupported(net, "half_sse", momentum=0.9) == avail  # evaluation: no optimizer to refuse
    for why in (ckernel.unsupported(net, "half_sse", "sgd", momentum=0.9), ckernel.unsupported(net, "half_sse", "adam"),
                ckernel.unsupported(net, "half_sse", "sgd", weight_decay=1e-4)):
        assert why == "only plain SGD (no momentum, no weight decay) is compiled"
    assert ckernel.unsupported(_net(2, [4, 5, 3], "erf", gen), "half_sse") == "activation 'erf' is not compiled"
    half = _net(2, [4, 5, 3], "relu", gen, torch.float16)
    assert ckernel.unsupported(half, "mse", "sgd").startswith("only float64/float32")
    assert ckernel.unsupported(net, "hinge", "sgd") == "loss 'hinge' is not compiled"
    deepest = ckernel.constant("SS_MAX_LAYERS")
    assert ckernel.unsupported(_net(1, [2] * (deepest + 1), "relu", gen), "mse") == avail
    assert ckernel.unsupported(_net(1, [2] * (deepest + 2), "relu", gen), "mse") == f"more than {deepest} layers"
    with pytest.raises((ValueError, RuntimeError)):  # the binding refuses what it cannot run, whatever the reason
        ckernel.CompiledMLP(_net(2, [4, 5, 3], "erf", gen), "mse")


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_pass_stays_inside_the_workspace_it_asks_for(dtype):
    """The workspace's size (ss_workspace) and its carving into buffers (seed_pass) come from one layout: every pass
    (a step on a given batch, a gathered step, a block of steps, evaluation with activations and gradients) leaves
    the elements past threads * ss_workspace untouched, and two threads' shares do not overlap (same bits as one)."""
    gen = torch.Generator().manual_seed(8)
    widths, B, S, n_rows = [7, 31, 12, 45, 5], 9, 3, 30  # the widest layer inside, wider than input and output
    x = torch.randn(S, n_rows, widths[0], generator=gen, dtype=dtype)
    y = torch.randn(S, n_rows, widths[-1], generator=gen, dtype=dtype)
    idx = torch.randint(0, n_rows, (4, S, B), generator=gen)
    alive = torch.ones(S, dtype=torch.bool)
    results = []
    for threads in (1, 2):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            net = _net(S, widths, "leaky_relu", torch.Generator().manual_seed(1), dtype)
            step = ckernel.CompiledMLP(net, "half_sse")
            need = threads * int(step.dll.ss_workspace(len(widths) - 1, step.widths, B))
            step.workspace = torch.full((need + 4096,), float("nan"), dtype=dtype)  # big enough: kept, with a tail
            step._work_ptr = ckernel.ffi.cast(step._real, step.workspace.data_ptr())
            out = [step(x[:, :B].contiguous(), y[:, :B].contiguous(), 0.05, alive).clone(),
                   step.indexed(x, y, idx[0], lr=0.05, alive=alive).clone(),
                   step.indexed_steps(x, y, idx[1:], lr=0.05, alive=alive)]
            grads = [torch.zeros_like(p) for p in net.parameters()]
            loss, sq, hidden = step.forward_grad(x[:, 10 : 10 + B], y[:, 10 : 10 + B], hidden=True, grads=grads, gscale=0.5)
            assert step.workspace.shape[0] == need + 4096 and step.workspace[need:].isnan().all()
            results.append([*out, loss, sq, *hidden, *grads, *net.parameters()])
        finally:
            torch.set_num_threads(old)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@needs_kernel
def test_the_cdef_declares_exactly_the_functions_the_library_exports():
    import shutil
    import subprocess

    lib, _ = ckernel._load()
    names = _header_functions()
    constants = {name for enum in _header_constants().values() for name in enum}
    assert set(dir(lib)) == names | constants  # cffi's lib lists what the cdef declared: functions and enum constants
    for name in names:
        assert callable(getattr(lib, name))  # found in the library (dlsym)
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm to list the library's exported symbols")
    out = subprocess.run([nm, "-D", "--defined-only", str(ckernel.library_path())], capture_output=True, text=True, check=True).stdout
    exported = {parts[2] for parts in (line.split() for line in out.splitlines()) if len(parts) == 3 and parts[1] == "T"}
    assert {n for n in exported if n.startswith("ss_")} == names


@needs_kernel
def test_every_call_is_checked_against_the_prototype():
    """Wrong argument count, a bare int for a pointer, or a pointer of the wrong precision (an argument, a struct or a
    struct's field): TypeError, C never called."""
    lib, _ = ckernel._load()
    ffi = ckernel.ffi
    for name in _header_functions():
        fn = getattr(lib, name)
        args = [ffi.NULL if t.kind == "pointer" else 0 for t in ffi.typeof(fn).args]
        with pytest.raises(TypeError, match=f"expects {len(args)} arguments, got {len(args) - 1}"):
            fn(*args[:-1])
        with pytest.raises(TypeError, match=f"expects {len(args)} arguments, got {len(args) + 1}"):
            fn(*args, 0)
    for sfx, other, other_sfx in (("f64", "float *", "f32"), ("f32", "double *", "f64")):
        step = getattr(lib, f"ss_sgd_step_{sfx}")
        args = [ffi.NULL if t.kind == "pointer" else 0 for t in ffi.typeof(step).args]
        with pytest.raises(TypeError):  # the net of the other precision
            step(ffi.new(f"struct ss_net_{other_sfx} *"), *args[1:])
        with pytest.raises(TypeError):  # the work buffer of the other precision
            step(*args[:5], ffi.cast(other, 0), *args[6:])
        batch = ffi.new(f"struct ss_batch_{sfx} *")
        with pytest.raises(TypeError):  # x given as the other precision
            batch.x = ffi.cast(other, 0)
        with pytest.raises(TypeError):  # x given as a bare address, as ctypes' c_void_p took it
            batch.x = 4096


@needs_kernel
@pytest.mark.skipif("avx512f" not in ckernel._cpu_flags(), reason="the CPU has no AVX-512F: only the 256-bit build runs here")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_512_bit_build_gives_the_256_bit_bits(monkeypatch, dtype):
    """Each output element is one lane summing over k in order with the same FMAs, whatever the vector width: the
    AVX-512 build (default where the CPU has it) must reproduce the AVX2 build bit for bit, steps and evaluation.
    Objective: half_sse (the paper's J) in both builds; the oracle is the other build, not an equation."""
    from studentspec.ensemble.corr import CorrAccumulator

    monkeypatch.setenv("STUDENTSPEC_KERNEL_ISA", "avx2")
    narrow, why = ckernel._load.__wrapped__()
    assert narrow is not None, why
    monkeypatch.delenv("STUDENTSPEC_KERNEL_ISA")
    assert ckernel.isa() == "avx512" and "-mavx512f" in ckernel.flags()
    wide, why = ckernel._load.__wrapped__()
    assert wide is not None, why
    results = []
    for dll in (narrow, wide):
        monkeypatch.setattr(ckernel, "_load", lambda dll=dll: (dll, ""))
        gen = torch.Generator().manual_seed(5)
        net = _net(3, [13, 37, 21, 7], "leaky_relu", gen, dtype)  # widths off every tile and vector multiple
        x, y = torch.randn(3, 40, 13, generator=gen, dtype=dtype), torch.randn(3, 40, 7, generator=gen, dtype=dtype)
        step = ckernel.CompiledMLP(net, "half_sse")
        alive = torch.ones(3, dtype=torch.bool)
        losses = [step(x[:, 8 * t : 8 * t + 8], y[:, 8 * t : 8 * t + 8], 0.05, alive).clone() for t in range(5)]
        grads = [torch.zeros_like(p) for p in net.parameters()]
        loss, sq, hidden = step.forward_grad(x, y, hidden=True, grads=grads, gscale=0.5)
        acc = CorrAccumulator()
        for i in range(0, 40, 16):
            t_part, h_part = x[:, i : i + 16, :5], hidden[0][:, i : i + 16]
            acc.update(t_part, h_part) if acc.n == 0 else step.corr_update(acc, t_part, h_part)
        results.append([*losses, loss, sq, *hidden, *grads, *(p.detach().clone() for p in net.parameters()), acc.cross, acc.sq_s])
    for a, b in zip(*results):
        assert torch.equal(a, b)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_correlation_sums_match_numpy_corrcoef(dtype):
    """CompiledMLP.corr_update (every chunk after the first) against numpy.corrcoef of the whole split, with a dead
    teacher node, a dead and a constant student node, chunks of uneven size, and a teacher slice read in place."""
    import numpy as np

    from studentspec.ensemble.corr import CorrAccumulator

    g = np.random.default_rng(3)
    S, N, m, n = 3, 300, 4, 37
    t = np.maximum(g.normal(size=(S, N, m)) + 0.2, 0)
    h = np.maximum(g.normal(size=(S, N, n)) + 0.5 * t[:, :, np.arange(n) % m] + 3.0, 0)  # offset: the shifts matter
    t[1, :, 2] = 0.0
    h[0, :, 3] = 0.0
    h[2, :, 5] = 3.7
    tt, ht = torch.from_numpy(t).to(dtype), torch.from_numpy(h).to(dtype)
    gen = torch.Generator().manual_seed(0)
    step = ckernel.CompiledMLP(_net(S, [2, n, 1], "relu", gen, dtype), "half_sse")
    acc = CorrAccumulator()
    for i in range(0, N, 64):  # 64, ..., 44 rows
        th, hh = tt[:, i : i + 64], ht[:, i : i + 64].contiguous()
        acc.update(th, hh) if acc.n == 0 else step.corr_update(acc, th, hh)
    assert acc.n == N
    corr = acc.corr().numpy()
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    for k in range(S):
        tk, hk = tt[k].double().numpy(), ht[k].double().numpy()  # the values the kernel saw
        with np.errstate(invalid="ignore", divide="ignore"):
            want = np.nan_to_num(np.corrcoef(np.concatenate([tk, hk], axis=1), rowvar=False)[:m, m:])
        np.testing.assert_allclose(corr[k], want, atol=tol)
    assert (corr[1, 2] == 0).all() and (corr[0, :, 3] == 0).all() and (corr[2, :, 5] == 0).all()
    # seed 1 alone gives the same bits
    one = CorrAccumulator()
    step1 = ckernel.CompiledMLP(_net(1, [2, n, 1], "relu", gen, dtype), "half_sse")
    for i in range(0, N, 64):
        th, hh = tt[1:2, i : i + 64], ht[1:2, i : i + 64].contiguous()
        one.update(th, hh) if one.n == 0 else step1.corr_update(one, th, hh)
    assert torch.equal(one.corr()[0], acc.corr()[1]) and torch.equal(one.cross[0], acc.cross[1])
