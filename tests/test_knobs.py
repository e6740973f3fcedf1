"""The original code's knobs (docs/model.md 4.5), each held to its definition written out independently here.

Oracles are per-seed `nn.Linear` stacks trained with `torch.optim.SGD` on the objective half_sse (the paper's
J = 1/2 sum over outputs, mean over the batch; the default train.loss), with the knob's rule applied by hand:
  train.freeze       the layer's requires_grad is False (and its values stay bit for bit);
  student.normalize  after every SGD step each hidden weight row of nn.Linear (= our column) divided by its norm;
  teacher.no_bias    nn.Linear(bias=False) in teacher and student;
  train.lr_reduction the lr of epoch i is lr * 0.5 ** (i // K), i.e. halved at every i > 0 with i % K == 0;
and NumPy for the init knobs (student.adv_init, perturb, same_dir, same_sign) and train.sample_budget's epochs.
The batches are the trainer's own (a second build() replays its generators): the data stream is not under test here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studentspec import load_config, train
from studentspec.config import ConfigError, lr_at
from studentspec.conv import train as conv_train
from studentspec.ensemble import seeding
from studentspec.mlp.train import build

from conftest import needs_kernel

TINY = ["input_dim=6", "output_dim=4", "teacher.widths=[3]", "student.multi=2", "student.init_std=0.3", "data.n_train=200",
        "data.n_eval=100", "train.batch_size=8", "train.steps_per_epoch=6", "train.epochs=3", "train.lr=0.05",
        "train.loss=half_sse", "train.dtype=float64"]
DEEP = ["teacher.widths=[3,4]"]
KERNELS = [pytest.param("c", marks=needs_kernel), "torch"]


def cfg_of(*extra: str, seeds: tuple[int, ...] = (1, 2)):
    return load_config(None, [f"seeds={list(seeds)}", *TINY, *extra])


def params(net) -> list[torch.Tensor]:
    return [t.detach().clone() for t in net.parameters()]


def replay(cfg) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every step's batch (x [S, B, d], y [S, B, C]) in order, from a fresh build's stream."""
    s = build(cfg)
    return [(x.clone(), y.clone()) for e in range(cfg.train.epochs) for x, y in s.stream.epoch(e)]


def lr_sequence(cfg) -> list[float]:
    """The lr of every step, written from the definition: schedule value times 0.5 per K epochs completed."""
    tc, out = cfg.train, []
    for epoch in range(tc.epochs):
        lr = tc.lr if not isinstance(tc.lr, dict) else tc.lr[max(k for k in tc.lr if k <= epoch)]
        halvings = epoch // tc.lr_reduction if tc.lr_reduction else 0
        out += [lr / 2**halvings] * tc.steps_per_epoch
    return out


def oracle(init: list[torch.Tensor], batches, seed_pos: int, lrs: list[float], frozen=(), normalize=False, bias=True):
    """One seed trained by a plain nn.Module + torch.optim.SGD on half_sse; returns [W_1, b_1, ...] in our layout."""
    ws, bs = init[0::2], init[1::2]
    layers = [torch.nn.Linear(w.shape[1], w.shape[2], bias=bias, dtype=torch.float64) for w in ws]
    with torch.no_grad():
        for lin, w, b in zip(layers, ws, bs):
            lin.weight.copy_(w[seed_pos].T)
            if bias:
                lin.bias.copy_(b[seed_pos])
    for l in frozen:  # 1-based layer numbers
        for p in layers[l - 1].parameters():
            p.requires_grad_(False)
    opt = torch.optim.SGD([p for lin in layers for p in lin.parameters() if p.requires_grad], lr=lrs[0])
    assert len(batches) == len(lrs) > 0
    for (x, y), lr in zip(batches, lrs):
        opt.param_groups[0]["lr"] = lr
        h = x[seed_pos]
        for lin in layers[:-1]:
            h = torch.relu(lin(h))
        out = layers[-1](h)
        loss = 0.5 * ((out - y[seed_pos]) ** 2).sum(dim=1).mean()  # half_sse: J = 1/2 sum over outputs, mean over the batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        if normalize:
            with torch.no_grad():
                for l, lin in enumerate(layers[:-1]):
                    if l + 1 not in frozen:
                        lin.weight /= lin.weight.norm(dim=1, keepdim=True)
    out = []
    for lin, b in zip(layers, bs):
        out += [lin.weight.detach().T, lin.bias.detach() if bias else torch.zeros_like(b[seed_pos])]
    return out


def trained(cfg, on_step=None):
    """(initial student params, trained student params, result) of cfg."""
    s = build(cfg)
    init = params(s.student)
    result = train(cfg, progress=False, setup=s, on_eval=(lambda points: on_step(s)) if on_step else None)
    return init, params(s.student), result


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---- train.freeze -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("widths,freeze", [([3], [1]), ([3], [2]), ([3, 4], [2]), ([3, 4], [1, 3])])
def test_freeze_keeps_the_layer_and_trains_the_rest_like_requires_grad_false(kernel, widths, freeze):
    cfg = cfg_of(f"teacher.widths={widths}", f"train.freeze={freeze}", f"train.kernel={kernel}")
    init, final, result = trained(cfg)
    assert result.kernel == kernel
    batches, lrs = replay(cfg), lr_sequence(cfg)
    for pos in range(len(cfg.seeds)):
        ref = oracle(init, batches, pos, lrs, frozen=freeze)
        for i, (mine, theirs) in enumerate(zip(final, ref, strict=True)):
            layer = i // 2 + 1
            if layer in freeze:
                assert torch.equal(mine[pos], init[i][pos])  # bit for bit its initial value
            else:
                assert not torch.equal(mine[pos], init[i][pos])  # it trained
                close(mine[pos], theirs)


# ---- student.normalize ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("widths", [[3], [3, 4]])
def test_normalize_keeps_unit_columns_after_every_step_and_equals_sgd_then_rescale(kernel, widths):
    # one step per epoch and an evaluation after each: the hook sees the student after every step
    cfg = cfg_of(f"teacher.widths={widths}", "student.normalize=true", "train.steps_per_epoch=1", "train.epochs=5",
                 f"train.kernel={kernel}")
    norms: list[np.ndarray] = []

    def look(s) -> None:
        norms.extend(np.linalg.norm(w.detach().numpy(), axis=1).ravel() for w in s.student.weights[:-1])

    s = build(cfg)
    init = params(s.student)
    for w in init[0:-2:2]:  # the original two-layer script normalizes at init too
        np.testing.assert_allclose(np.linalg.norm(w.numpy(), axis=1), 1.0, rtol=1e-14)
    result = train(cfg, progress=False, setup=s, on_eval=lambda points: look(s))
    assert result.kernel == kernel and len(norms) == 6 * len(widths)  # before training + 5 steps, per hidden layer
    np.testing.assert_allclose(np.concatenate(norms), 1.0, rtol=1e-14)
    final, batches = params(s.student), replay(cfg)
    for pos in range(len(cfg.seeds)):
        for mine, theirs in zip(final, oracle(init, batches, pos, lr_sequence(cfg), normalize=True), strict=True):
            close(mine[pos], theirs)
    # the output layer is not rescaled
    assert not np.allclose(np.linalg.norm(final[-2].numpy(), axis=1), 1.0)


def test_normalize_leaves_a_frozen_layer_as_initialized():
    cfg = cfg_of("student.normalize=true", "train.freeze=[1]", "train.kernel=torch")
    init, final, _ = trained(cfg)
    assert torch.equal(init[0], final[0]) and torch.equal(init[1], final[1])
    batches = replay(cfg)
    for pos in range(2):
        for mine, theirs in zip(final, oracle(init, batches, pos, lr_sequence(cfg), frozen=[1], normalize=True), strict=True):
            close(mine[pos], theirs)


# ---- teacher.no_bias ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("extra", [[], ["student.init_std=null", *DEEP]])
def test_no_bias_trains_bias_free_nets(kernel, extra):
    cfg = cfg_of("teacher.no_bias=true", f"train.kernel={kernel}", *extra)
    s = build(cfg)
    assert all(torch.equal(b, torch.zeros_like(b)) for b in s.teacher.biases)
    init = params(s.student)
    result = train(cfg, progress=False, setup=s)
    assert result.kernel == kernel
    final = params(s.student)
    assert all(torch.equal(b, torch.zeros_like(b)) for b in final[1::2])
    # the teacher is the with-bias teacher's weights: biases drawn and dropped
    with_bias = build(cfg_of(f"train.kernel={kernel}", *extra))
    assert all(torch.equal(a, b) for a, b in zip(s.teacher.weights, with_bias.teacher.weights))
    assert any(not torch.equal(b, torch.zeros_like(b)) for b in with_bias.teacher.biases)
    # the teacher's labels come from a bias-free nn.Module
    x, y = replay(cfg)[0]
    for pos in range(2):
        h = x[pos]
        for w in s.teacher.weights[:-1]:
            h = torch.relu(h @ w[pos])
        close(h @ s.teacher.weights[-1][pos], y[pos])
    batches = replay(cfg)
    for pos in range(2):
        for mine, theirs in zip(final, oracle(init, batches, pos, lr_sequence(cfg), bias=False), strict=True):
            close(mine[pos], theirs)


# ---- student.adv_init -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["adv", "help"])
@pytest.mark.parametrize("extra", [[], [*DEEP, "student.init_std=null"]])
def test_adv_init_flips_first_layer_vectors_against_the_weakest_teacher_node(mode, extra):
    plain = build(cfg_of(*extra))
    s = build(cfg_of(f"student.adv_init={mode}", *extra))
    assert torch.equal(s.teacher.weights[0], plain.teacher.weights[0])
    for pos in range(2):
        v = plain.teacher.weights[0][pos].numpy()[:, -1]  # the last (weakest) teacher node's weight vector, no bias
        w0 = plain.student.weights[0][pos].detach().numpy()
        dots = v @ w0
        flip = dots > 0 if mode == "adv" else dots < 0
        assert 0 < flip.sum() < flip.size  # the case is not vacuous
        expect = np.where(flip[None, :], -w0, w0)
        np.testing.assert_array_equal(s.student.weights[0][pos].detach().numpy(), expect)
        after = v @ expect
        assert (after <= 0).all() if mode == "adv" else (after >= 0).all()
    # biases and every higher layer are the random init's
    for a, b in zip(params(s.student)[1:], params(plain.student)[1:]):
        assert torch.equal(a, b)


# ---- train.lr_reduction -------------------------------------------------------------------------------------------

def test_lr_reduction_halves_at_every_kth_epoch():
    hand = [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025]  # K = 3: halved at epochs 3 and 6
    assert [lr_at(0.1, e, 3) for e in range(8)] == hand
    # with a schedule: the schedule's value, halved once per K epochs completed
    sched = {0: 0.2, 4: 0.1}
    assert [lr_at(sched, e, 2) for e in range(7)] == [0.2, 0.2, 0.1, 0.1, 0.025, 0.025, 0.0125]
    assert [lr_at(sched, e) for e in range(6)] == [0.2, 0.2, 0.2, 0.2, 0.1, 0.1]
    cfg = cfg_of("train.lr_reduction=3", "train.epochs=8", "train.lr=0.1")
    assert [conv_train._lr(cfg, e) for e in range(8)] == hand  # the conv trainer: the same definition


@pytest.mark.parametrize("kernel", KERNELS)
def test_lr_reduction_is_the_lr_training_uses(kernel):
    cfg = cfg_of("train.lr_reduction=2", "train.epochs=5", "train.lr={0: 0.1, 3: 0.08}", f"train.kernel={kernel}")
    lrs = lr_sequence(cfg)
    assert sorted(set(lrs)) == [0.02, 0.04, 0.05, 0.1]  # 0.1, 0.1, 0.05, 0.04, 0.02: more than one halving
    init, final, _ = trained(cfg)
    batches = replay(cfg)
    for pos in range(2):
        for mine, theirs in zip(final, oracle(init, batches, pos, lrs), strict=True):
            close(mine[pos], theirs)
    # and the lr without the reduction gives another student
    _, other, _ = trained(cfg_of("train.epochs=5", "train.lr={0: 0.1, 3: 0.08}", f"train.kernel={kernel}"))
    assert not torch.equal(other[0], final[0])


# ---- student.perturb, same_dir, same_sign ---------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [[], DEEP])
def test_perturb_is_the_teacher_plus_gaussian_noise_from_the_student_generator(extra):
    sigma = 0.01
    cfg = cfg_of("student.multi=1", f"student.perturb={sigma}", *extra)
    s = build(cfg)
    for pos, g in enumerate(seeding.generators(cfg.seeds, "student")):  # per layer: W's noise, then b's
        for tw, tb, w, b in zip(s.teacher.weights, s.teacher.biases, s.student.weights, s.student.biases):
            nw = torch.randn(*tw.shape[1:], generator=g, dtype=torch.float64) * sigma
            nb = torch.randn(*tb.shape[1:], generator=g, dtype=torch.float64) * sigma
            assert torch.equal(w[pos].detach(), tw[pos] + nw) and torch.equal(b[pos].detach(), tb[pos] + nb)
    diffs = np.concatenate([(a.detach() - t).numpy().ravel() for a, t in zip(s.student.parameters(), [*s.teacher.parameters()])])
    assert 0.5 * sigma < diffs.std() < 2 * sigma
    # sigma 0: the teacher itself
    s0 = build(cfg_of("student.multi=1", "student.perturb=0", *extra))
    assert all(torch.equal(a.detach(), t) for a, t in zip(s0.student.parameters(), s0.teacher.parameters()))


@pytest.mark.parametrize("extra", [[], [*DEEP, "student.init_std=null"]])
def test_same_dir_is_the_teacher_scaled_to_the_student_layer_norm(extra):
    plain = build(cfg_of("student.multi=1", *extra))
    s = build(cfg_of("student.multi=1", "student.same_dir=true", *extra))
    for pos in range(2):
        for l, (tw, tb) in enumerate(zip(plain.teacher.weights, plain.teacher.biases)):
            W0 = plain.student.weights[l][pos].detach().numpy()
            T, Tb = tw[pos].numpy(), tb[pos].numpy()
            r = np.sqrt((W0**2).sum()) / np.sqrt((T**2).sum())  # Frobenius norms of the weights (the bias follows)
            np.testing.assert_allclose(s.student.weights[l][pos].detach().numpy(), r * T, rtol=1e-13, atol=0)
            np.testing.assert_allclose(s.student.biases[l][pos].detach().numpy(), r * Tb, rtol=1e-13, atol=0)
            np.testing.assert_allclose(np.linalg.norm(s.student.weights[l][pos].detach().numpy()), np.linalg.norm(W0), rtol=1e-13)


@pytest.mark.parametrize("extra", [[], [*DEEP, "student.init_std=null"]])
def test_same_sign_flips_the_weights_of_opposite_sign(extra):
    plain = build(cfg_of("student.multi=1", *extra))
    s = build(cfg_of("student.multi=1", "student.same_sign=true", *extra))
    flipped = 0
    for mine, base, teach in zip(s.student.parameters(), plain.student.parameters(), plain.teacher.parameters()):
        m, b, t = (x.detach().numpy() for x in (mine, base, teach))
        opposite = ((b > 0) & (t < 0)) | ((b < 0) & (t > 0))
        np.testing.assert_array_equal(m, np.where(opposite, -b, b))
        assert not (((m > 0) & (t < 0)) | ((m < 0) & (t > 0))).any()
        flipped += int(opposite.sum())
    assert flipped > 0


# ---- train.sample_budget --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,per_epoch", [
    (["train.steps_per_epoch=null", "train.batch_size=20"], 200),  # one pass over n_train = 200 samples
    (["train.steps_per_epoch=6", "train.batch_size=8"], 48),  # 6 steps of 8
    (["train.optimizer=gd", "train.steps_per_epoch=2"], 400),  # gd back-propagates the whole set every step
])
def test_sample_budget_sets_the_epochs(extra, per_epoch):
    tree = ["seeds=[1]", *[t for t in TINY if not t.startswith("train.epochs")], *extra]
    cfg = load_config(None, [*tree, f"train.sample_budget={5 * per_epoch}"])
    assert cfg.train.epochs == 5
    assert load_config(None, [*tree, f"train.sample_budget={5 * per_epoch}", "train.epochs=5"]).train.epochs == 5  # agreeing: fine
    with pytest.raises(ConfigError, match="train.sample_budget.*train.epochs=4"):
        load_config(None, [*tree, f"train.sample_budget={5 * per_epoch}", "train.epochs=4"])
    with pytest.raises(ConfigError, match="train.sample_budget.*multiple"):
        load_config(None, [*tree, f"train.sample_budget={5 * per_epoch + 1}"])
    if "train.optimizer=gd" not in extra:
        result = train(cfg, progress=False)
        assert result.steps * cfg.train.batch_size == 5 * per_epoch


# ---- every knob: a seed alone equals the same seed inside an ensemble ----------------------------------------------

@pytest.mark.parametrize("extra", [
    ["train.freeze=[1]"], ["train.freeze=[2]", "train.kernel=torch"], [*DEEP, "train.freeze=[2]"],
    ["student.normalize=true"], ["student.normalize=true", "train.kernel=torch", *DEEP],
    ["teacher.no_bias=true"], ["teacher.no_bias=true", "train.kernel=torch", "student.init_std=null"],
    ["student.adv_init=adv"], ["student.adv_init=help", *DEEP], ["train.lr_reduction=1"],
    ["student.multi=1", "student.perturb=0.05"], ["student.multi=1", "student.same_dir=true", *DEEP],
    ["student.multi=1", "student.same_sign=true"], ["train.sample_budget=96", "train.epochs=2"],
    ["train.freeze=[2]", "student.normalize=true", "teacher.no_bias=true", "train.optimizer=adam", "train.lr=0.01"],
], ids=lambda e: ",".join(e))
def test_seed_alone_equals_seed_inside_ensemble(extra):
    _, alone, _ = trained(cfg_of(*extra, seeds=(7,)))
    _, inside, _ = trained(cfg_of(*extra, seeds=(3, 7, 11)))
    assert len(alone) == len(inside) >= 4
    for a, b in zip(alone, inside):
        assert torch.equal(a[0], b[1])


# ---- the divergence freeze with frozen layers ----------------------------------------------------------------------

@pytest.mark.parametrize("kernel", KERNELS)
def test_a_diverging_seed_is_frozen_with_frozen_layers_and_normalized_columns(kernel):
    # layer 1 frozen, layer 2 normalized, the top layer free to blow up on seed 2's huge inputs (Leaky ReLU: no node dies)
    cfg = cfg_of(*DEEP, "train.freeze=[1]", "student.normalize=true", "teacher.no_bias=true", f"train.kernel={kernel}",
                 "train.steps_per_epoch=20", "teacher.activation=leaky_relu", seeds=(1, 2, 3))
    _, baseline, _ = trained(cfg)
    s = build(cfg)
    init = params(s.student)
    s.stream.set_training(s.stream.x_train * torch.tensor([1.0, 1e6, 1.0], dtype=torch.float64)[:, None, None])
    result = train(cfg, progress=False, setup=s)
    assert result.kernel == kernel and list(result.diverged) == [2]
    final = params(s.student)
    for pos in (0, 2):
        for a, b in zip(final, baseline):
            assert torch.equal(a[pos], b[pos])
    assert all(torch.isfinite(t).all() for t in final)
    assert torch.equal(final[0], init[0]) and torch.equal(final[1], init[1])  # the frozen layer, for every seed
    np.testing.assert_allclose(np.linalg.norm(final[2].numpy(), axis=1), 1.0, rtol=1e-14)  # the dead seed's too


# ---- bad combinations: ConfigError naming the key ------------------------------------------------------------------

@pytest.mark.parametrize("extra,key", [
    (["train.freeze=[3]"], "train.freeze"),
    (["train.freeze=[0]"], "train.freeze"),
    (["train.freeze=[1,1]"], "train.freeze"),
    (["train.freeze=[1,2]"], "train.freeze"),  # every layer: nothing would train
    (["student.perturb=0.1"], "student.perturb"),  # multi 2
    (["student.same_dir=true"], "student.same_dir"),
    (["student.same_sign=true"], "student.same_sign"),
    (["student.perturb=-1"], "student.perturb"),
    (["student.multi=1", "student.perturb=0.1", "student.init_scale=0.1"], "student.init_scale"),
    (["student.multi=1", "student.same_sign=true", "student.adv_init=adv"], "student.adv_init"),
    (["student.adv_init=away"], "student.adv_init"),
    (["teacher.no_bias=true", "teacher.tune=true"], "teacher.no_bias"),
    (["train.lr_reduction=0"], "train.lr_reduction"),
    (["train.sample_budget=0"], "train.sample_budget"),
    (["train.sample_budget=100"], "train.sample_budget"),  # not a multiple of 48
    (["data.kind=online", "train.steps_per_epoch=null", "train.sample_budget=48"], "train.sample_budget"),
    (["teacher.checkpoint=T.pt", "student.normalize=true"], "student.normalize"),
    (["teacher.checkpoint=T.pt", "train.freeze=[1]"], "train.freeze"),
])
def test_bad_combinations_name_the_key(extra, key):
    with pytest.raises(ConfigError) as err:
        cfg_of(*extra)
    assert str(err.value).startswith(key) and "\n" not in str(err.value), str(err.value)
