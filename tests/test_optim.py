"""optim.frozen, the one divergence freeze of the MLP and conv trainers: a dead seed keeps its parameters and
its optimizer state, the living seeds' update is unchanged."""

import pytest
import torch

from studentspec.ensemble.optim import Optimizer, frozen, seed_mask


@pytest.mark.parametrize("kind,momentum,decay", [("sgd", 0.9, 0.01), ("adam", 0.0, 0.0)])
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

    free, free_opt = run(freeze_second=False)
    held, held_opt = run(freeze_second=True)
    for a, b, c in zip(held, free, after_one):
        assert torch.equal(a[0], b[0])  # the living seed: as if nothing were frozen
        assert torch.equal(a[1], c[1]) and not torch.equal(b[1], c[1])  # the dead seed: where it was after step 1
    for s_held, s_one, s_free in zip(held_opt.state(), state_one, free_opt.state()):
        assert torch.equal(s_held[1], s_one[1]) and not torch.equal(s_free[1], s_one[1])  # its momentum / moments too
        assert torch.equal(s_held[0], s_free[0])
