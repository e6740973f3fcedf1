"""Does torch.optim keep studentspec's numbers? A bitwise check of torch.optim.SGD / Adam on stacked [S, ...] tensors.

For each optimizer setting x implementation (foreach=False, foreach=True, fused=True) x dtype it runs 50 steps
(lr changing every 10 steps, as a schedule does through param_groups) on parameters with a leading seed axis and
per-seed gradients, and prints

  alone==ens  seed s trained alone (S=1 tensors) has bit-identical parameters to seed s inside S=8, for every s;
  ==hand      the S=8 parameters are bit-identical to the hand-written batched rule studentspec used before the
              optimizer registry (copied below as `hand_step`: the rule the stored SGD / Adam runs were made with);
  ==oracle    the S=8 parameters are bit-identical to a default torch.optim optimizer run per seed on plain
              per-seed tensors (no seed axis), i.e. what torch.optim does to one nn.Module;
  us small    wall time of one step (float64, one thread, best of 5 blocks) on a small MLP ensemble (S=8, 10x50 + 10
              + 1x10), where the per-call overhead shows, and
  us large    on a large one (S=8, 500x784 + 500 + 10x500 + 10), where the arithmetic does.

Rows: `hand` the former rule; `foreach=False` / `foreach=True` / `fused=True` the torch.optim classes;
`studentspec` what studentspec.ensemble.optim.Optimizer runs now (the registry's rules: torch.optim's
functional update, SGD single-tensor, Adam foreach).

Run: python benchmarks/optim_bitwise.py
"""

from __future__ import annotations

import time

import torch

STEPS, S = 50, 8
SHAPES = [(37, 13), (13,), (5, 37), (3, 7, 11)]  # odd sizes: each seed's slice starts at a different vector offset
SETTINGS = [("sgd", {"momentum": m, "weight_decay": wd}) for m in (0.0, 0.9) for wd in (0.0, 5e-4)]
SETTINGS += [("adam", {"weight_decay": 0.0}), ("adam", {"weight_decay": 5e-4})]
IMPLS = {"foreach=False": {"foreach": False}, "foreach=True": {"foreach": True}, "fused=True": {"fused": True}}
SMALL, LARGE = [(10, 50), (10,), (1, 10)], [(500, 784), (500,), (10, 500), (10,)]


def lr_at(step: int) -> float:
    return (0.05, 0.013, 0.0071, 0.003, 0.0011)[step // 10]


def hand_step(kind: str, hp: dict, params: list[torch.Tensor], grads: list[torch.Tensor], state: dict, lr: float) -> None:
    """The hand-written batched rule of studentspec.ensemble.optim before the registry (commit effa8d1)."""
    momentum, wd = hp.get("momentum", 0.0), hp.get("weight_decay", 0.0)
    b1, b2, eps = 0.9, 0.999, 1e-8
    state["t"] = t = state.get("t", 0) + 1
    for i, (p, g) in enumerate(zip(params, grads)):
        if wd:
            g = g.add(p, alpha=wd)
        if kind == "adam":
            if i not in state:
                state[i] = (torch.zeros_like(p), torch.zeros_like(p))
            m, v = state[i]
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2**t)).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - b1**t))
            continue
        if momentum:
            if i not in state:
                state[i] = g.clone()
            else:
                state[i].mul_(momentum).add_(g)
            g = state[i]
        p.sub_(g, alpha=lr)


def data(dtype: torch.dtype) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Initial parameters [S, ...] and STEPS gradient lists [S, ...], each seed's from its own generator."""
    gens = [torch.Generator().manual_seed(100 + s) for s in range(S)]
    p0 = [torch.stack([torch.randn(sh, generator=g, dtype=torch.float64) for g in gens]).to(dtype) for sh in SHAPES]
    grads = [[torch.stack([torch.randn(sh, generator=g, dtype=torch.float64) for g in gens]).to(dtype) for sh in SHAPES] for _ in range(STEPS)]
    return p0, grads


def run_torch(kind: str, hp: dict, impl: dict, p0: list[torch.Tensor], grads: list[list[torch.Tensor]], seeds: slice | int) -> list[torch.Tensor]:
    """torch.optim on the stacked tensors of `seeds` (a slice: keep the seed axis; an int: one seed, no seed axis)."""
    params = [p[seeds].clone() for p in p0]
    cls = torch.optim.SGD if kind == "sgd" else torch.optim.Adam
    opt = cls(params, lr=lr_at(0), **hp, **impl)
    for step, gs in enumerate(grads):
        opt.param_groups[0]["lr"] = lr_at(step)
        for p, g in zip(params, gs):
            p.grad = g[seeds].clone()
        opt.step()
    return params


def run_ours(kind: str, hp: dict, p0: list[torch.Tensor], grads: list[list[torch.Tensor]], seeds: slice) -> list[torch.Tensor]:
    from studentspec.ensemble.optim import Optimizer

    params = [p[seeds].clone() for p in p0]
    opt = Optimizer(params, kind, hp.get("momentum", 0.0), hp.get("weight_decay", 0.0))
    for step, gs in enumerate(grads):
        opt.step([g[seeds] for g in gs], lr_at(step))
    return params


def run_hand(kind: str, hp: dict, p0: list[torch.Tensor], grads: list[list[torch.Tensor]], seeds: slice) -> list[torch.Tensor]:
    params, state = [p[seeds].clone() for p in p0], {}
    for step, gs in enumerate(grads):
        hand_step(kind, hp, params, [g[seeds] for g in gs], state, lr_at(step))
    return params


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def check(kind: str, hp: dict, impl: dict | str, dtype: torch.dtype) -> tuple[bool, bool, bool]:
    p0, grads = data(dtype)

    def run(seeds: slice) -> list[torch.Tensor]:
        if impl == "hand":
            return run_hand(kind, hp, p0, grads, seeds)
        if impl == "studentspec":
            return run_ours(kind, hp, p0, grads, seeds)
        return run_torch(kind, hp, impl, p0, grads, seeds)

    ens = run(slice(None))
    a = all(same([p[s : s + 1] for p in ens], run(slice(s, s + 1))) for s in range(S))
    b = same(ens, run_hand(kind, hp, p0, grads, slice(None)))
    c = all(same([p[s] for p in ens], run_torch(kind, hp, {}, p0, grads, s)) for s in range(S))
    return a, b, c


def timing(kind: str, hp: dict, impl: dict | str, shapes: list[tuple[int, ...]], reps: int) -> float:
    """Best of 5 blocks of `reps` steps, microseconds per step (the gradient assignment included for the classes)."""
    from studentspec.ensemble.optim import Optimizer

    g = torch.Generator().manual_seed(0)
    params = [torch.randn(S, *sh, generator=g, dtype=torch.float64) * 0.01 for sh in shapes]
    grads = [torch.randn_like(p) * 0.01 for p in params]
    state: dict = {}
    if impl == "studentspec":
        ours = Optimizer(params, kind, hp.get("momentum", 0.0), hp.get("weight_decay", 0.0))
    elif impl != "hand":
        opt = (torch.optim.SGD if kind == "sgd" else torch.optim.Adam)(params, lr=1e-3, **hp, **impl)

    def one() -> None:
        if impl == "hand":
            hand_step(kind, hp, params, grads, state, 1e-3)
        elif impl == "studentspec":
            ours.step(grads, 1e-3)
        else:
            opt.param_groups[0]["lr"] = 1e-3
            for p, gr in zip(params, grads):
                p.grad = gr
            opt.step()

    one()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            one()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best * 1e6


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, {STEPS} steps, S={S} vs S=1")
    print(f"{'optimizer':<30}{'impl':<15}{'dtype':<9}{'alone==ens':>11}{'==hand':>8}{'==oracle':>10}{'us small':>10}{'us large':>10}")
    for kind, hp in SETTINGS:
        name = f"{kind} " + " ".join(f"{k[0] if k == 'momentum' else 'wd'}={v:g}" for k, v in hp.items())
        for label, impl in [("hand", "hand"), *IMPLS.items(), ("studentspec", "studentspec")]:
            for dtype in (torch.float64, torch.float32):
                try:
                    a, b, c = check(kind, hp, impl, dtype)
                except (RuntimeError, ValueError) as err:
                    print(f"{name:<30}{label:<15}{str(dtype)[6:]:<9}  unavailable: {str(err).splitlines()[0][:60]}")
                    continue
                us = f"{timing(kind, hp, impl, SMALL, 300):10.1f}{timing(kind, hp, impl, LARGE, 10):10.0f}" if dtype == torch.float64 else ""
                print(f"{name:<30}{label:<15}{str(dtype)[6:]:<9}{'yes' if a else 'NO':>11}{'yes' if b else 'NO':>8}{'yes' if c else 'NO':>10}{us}", flush=True)


if __name__ == "__main__":
    main()
