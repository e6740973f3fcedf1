"""The optimizer registry and optim.Optimizer: each registered rule equals a per-seed torch.optim optimizer bit for bit,
a seed alone equals itself inside an ensemble, and optim.frozen (the one divergence freeze of the MLP and conv
trainers) keeps a dead seed's parameters and optimizer state while the living seeds' update is unchanged."""

import pytest
import torch

from studentspec import ConfigError, load_config
from studentspec.ensemble import optimizers
from studentspec.ensemble.optim import Optimizer, frozen, seed_mask

# the independent oracle of each registered optimizer: a torch.optim class run on one seed's plain tensors
ORACLES = {"sgd": torch.optim.SGD, "gd": torch.optim.SGD, "adam": torch.optim.Adam}
# settings per optimizer: (momentum, weight_decay)
SETTINGS = {"sgd": [(0.0, 0.0), (0.9, 0.0), (0.0, 5e-4), (0.9, 5e-4)], "gd": [(0.0, 0.0), (0.9, 5e-4)], "adam": [(0.0, 0.0), (0.0, 5e-4)]}
CASES = [(name, m, wd) for name in optimizers.names() for m, wd in SETTINGS[name]]
SHAPES = [(37, 13), (13,), (3, 7, 11)]  # odd sizes: each seed's slice starts at a different vector offset
S, STEPS = 5, 30


def lr_at(step: int) -> float:
    return (0.05, 0.01, 0.003)[step // 10]  # changing, as a schedule's lr does


def problem(dtype: torch.dtype) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    p0 = [torch.randn(S, *sh, generator=g, dtype=dtype) for sh in SHAPES]
    return p0, [[torch.randn_like(p) for p in p0] for _ in range(STEPS)]


def train(kind: str, momentum: float, decay: float, p0: list[torch.Tensor], grads: list[list[torch.Tensor]], seeds: slice) -> list[torch.Tensor]:
    params = [p[seeds].clone() for p in p0]
    opt = Optimizer(params, kind, momentum, decay)
    for step, gs in enumerate(grads):
        opt.step([g[seeds] for g in gs], lr_at(step))
    return params


def kwargs(name: str, momentum: float, decay: float) -> dict[str, float]:
    return {"momentum": momentum, "weight_decay": decay} if ORACLES[name] is torch.optim.SGD else {"weight_decay": decay}


def test_every_registered_optimizer_has_an_oracle_and_settings():
    assert optimizers.names() == ["sgd", "gd", "adam"]
    assert set(ORACLES) == set(SETTINGS) == set(optimizers.names())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind,momentum,decay", CASES)
def test_update_equals_a_per_seed_torch_optim_optimizer_bit_for_bit(kind, momentum, decay, dtype):
    p0, grads = problem(dtype)
    ens = train(kind, momentum, decay, p0, grads, slice(None))
    for s in range(S):
        ref = [torch.nn.Parameter(p[s].clone()) for p in p0]
        opt = ORACLES[kind](ref, lr=lr_at(0), **kwargs(kind, momentum, decay))
        for step, gs in enumerate(grads):
            opt.param_groups[0]["lr"] = lr_at(step)
            for r, g in zip(ref, gs):
                r.grad = g[s].clone()
            opt.step()
        for a, r in zip(ens, ref):
            assert torch.equal(a[s], r.detach())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind,momentum,decay", CASES)
def test_a_seed_alone_equals_itself_inside_the_ensemble(kind, momentum, decay, dtype):
    p0, grads = problem(dtype)
    ens = train(kind, momentum, decay, p0, grads, slice(None))
    for s in range(S):
        alone = train(kind, momentum, decay, p0, grads, slice(s, s + 1))
        for a, e in zip(alone, ens):
            assert torch.equal(a[0], e[s])


def test_the_hyperparameters_are_used():
    p0, grads = problem(torch.float64)
    runs = {case: train(*case, p0, grads, slice(None)) for case in CASES}
    for a, b in [(("sgd", 0.0, 0.0), ("sgd", 0.9, 0.0)), (("sgd", 0.0, 0.0), ("sgd", 0.0, 5e-4)), (("adam", 0.0, 0.0), ("adam", 0.0, 5e-4)),
                 (("sgd", 0.0, 0.0), ("adam", 0.0, 0.0))]:
        assert not torch.equal(runs[a][0], runs[b][0])
    assert all(torch.equal(x, y) for x, y in zip(runs["sgd", 0.9, 5e-4], runs["gd", 0.9, 5e-4]))  # gd: SGD's rule, full batch


@pytest.mark.parametrize("kind,momentum,decay", [("sgd", 0.9, 0.01), ("gd", 0.9, 0.01), ("adam", 0.0, 0.0), ("adam", 0.0, 0.01)])
def test_a_dead_seed_keeps_parameters_and_state_while_the_living_update(kind, momentum, decay):
    g = torch.Generator().manual_seed(0)
    p0 = [torch.randn(2, 3, 4, generator=g, dtype=torch.float64), torch.randn(2, 4, generator=g, dtype=torch.float64)]
    grads = [[torch.randn_like(p) for p in p0] for _ in range(2)]

    def run(freeze_second: bool) -> tuple[list[torch.Tensor], Optimizer]:
        params = [p.clone() for p in p0]
        opt = Optimizer(params, kind, momentum, decay)
        opt.step(grads[0], 0.1)
        alive = torch.tensor([True, not freeze_second])
        with frozen(alive, opt):
            opt.step([torch.where(seed_mask(alive, gr), gr, 0.0) for gr in grads[1]], 0.1)
        return params, opt

    after_one = [p.clone() for p in p0]
    ref_opt = Optimizer(after_one, kind, momentum, decay)
    ref_opt.step(grads[0], 0.1)
    state_one = [t.clone() for t in ref_opt.state()]
    assert len(state_one) == (2 if kind != "adam" else 4)  # momentum buffers / both Adam moments, one per parameter

    free, free_opt = run(freeze_second=False)
    held, held_opt = run(freeze_second=True)
    for a, b, c in zip(held, free, after_one):
        assert torch.equal(a[0], b[0])  # the living seed: as if nothing were frozen
        assert torch.equal(a[1], c[1]) and not torch.equal(b[1], c[1])  # the dead seed: where it was after step 1
    assert len(held_opt.state()) == len(state_one) == len(free_opt.state())
    for s_held, s_one, s_free in zip(held_opt.state(), state_one, free_opt.state()):
        assert torch.equal(s_held[1], s_one[1]) and not torch.equal(s_free[1], s_one[1])  # its momentum / moments too
        assert torch.equal(s_held[0], s_free[0])


def test_an_unknown_optimizer_is_an_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"train\.optimizer.*must be one of 'sgd', 'gd' or 'adam'"):
        load_config(None, ["train.optimizer=rmsprop"])
    with pytest.raises(KeyError, match="unknown optimizer 'rmsprop' \\(known: sgd, gd, adam\\)"):
        Optimizer([torch.zeros(2, 3)], "rmsprop")
    for name in optimizers.names():
        assert load_config(None, [f"train.optimizer={name}"]).train.optimizer == name


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        optimizers.register(optimizers.get("sgd"))


def test_plain_sgd_is_an_attribute_of_the_rule_read_in_one_helper():
    """W -= lr dW (what the compiled step and the fused backward run): sgd and gd without momentum or weight decay."""
    from studentspec.ensemble import optimizers

    assert optimizers.plain_sgd("sgd", 0.0, 0.0) and optimizers.plain_sgd("gd", 0.0, 0.0)
    assert not optimizers.plain_sgd("sgd", 0.9, 0.0) and not optimizers.plain_sgd("gd", 0.0, 1e-4)
    assert not optimizers.plain_sgd("adam", 0.0, 0.0)
