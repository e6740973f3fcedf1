"""A training loop's state between epochs as plain tensors and numbers: what every pipeline's checkpoint holds.

The pipelines (mlp/checkpoint.py, conv/checkpoint.py) name their tensors, generators and extras; this
module turns them into a dict that torch.load(weights_only=True) reads back, and puts one back in place.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .optim import Optimizer


def save(pipeline: str, tensors: list[Tensor], opt: Optimizer, gens: list[torch.Generator], alive: Tensor,
         diverged: dict[int, int], step: int, elapsed: float, **extra: Any) -> dict[str, Any]:
    """The state dict of a loop: its trained tensors, optimizer state, generator states, alive seeds, extras."""
    return {
        "pipeline": pipeline,
        "step": step,
        "tensors": [t.detach().cpu().clone() for t in tensors],
        "optimizer": {k: [None if t is None else t.detach().cpu().clone() for t in v] for k, v in opt.state_dict().items()},
        "generators": [g.get_state() for g in gens],
        "alive": alive.cpu().clone(),
        "diverged": [[seed, at] for seed, at in diverged.items()],
        "elapsed": elapsed,
        "extra": extra,
    }


@torch.no_grad()
def load(state: dict[str, Any], pipeline: str, tensors: list[Tensor], opt: Optimizer, gens: list[torch.Generator], alive: Tensor,
         diverged: dict[int, int]) -> dict[str, Any]:
    """Put a save() back in place (same config, freshly built); returns its step, elapsed time and extras."""
    if state.get("pipeline") != pipeline or len(state["tensors"]) != len(tensors) or len(state["generators"]) != len(gens):
        raise ValueError(f"the checkpoint does not hold this {pipeline} run's state")
    for t, saved in zip(tensors, state["tensors"]):
        t.copy_(saved)
    opt.load_state_dict(state["optimizer"])
    for g, saved in zip(gens, state["generators"]):
        g.set_state(saved)
    alive.copy_(state["alive"])
    diverged.update({int(seed): int(at) for seed, at in state["diverged"]})
    return {"step": int(state["step"]), "elapsed": float(state["elapsed"]), **state["extra"]}
