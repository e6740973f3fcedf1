"""A training loop's state between epochs as plain tensors and numbers: what every pipeline's checkpoint holds.

The pipelines (mlp/checkpoint.py, conv/checkpoint.py) name their tensors, generators and extras; this
module turns them into a dict that torch.load(weights_only=True) reads back, checks a read-back dict
against a freshly built loop (every key, type, shape and dtype), and only then puts it back in place.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .optim import Optimizer

KEYS = ("pipeline", "step", "tensors", "optimizer", "generators", "alive", "diverged", "elapsed", "extra")


class StateError(ValueError):
    """A saved state that does not fit the loop: `field` (dotted) and what is wrong with it."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field {field}: {problem}")
        self.field, self.problem = field, problem


def save(
    pipeline: str,
    tensors: list[Tensor],
    opt: Optimizer,
    gens: list[torch.Generator],
    *,
    alive: Tensor,
    diverged: dict[int, int],
    step: int,
    elapsed: float,
    **extra: Any,
) -> dict[str, Any]:
    """The state dict of a loop: its trained tensors, optimizer state, generator states, alive seeds, extras."""
    return {
        "pipeline": pipeline,
        "step": step,
        "tensors": [t.detach().cpu().clone() for t in tensors],
        "optimizer": {
            k: [None if t is None else t.detach().cpu().clone() for t in v] for k, v in opt.state_dict().items()
        },
        "generators": [g.get_state() for g in gens],
        "alive": alive.cpu().clone(),
        "diverged": [[seed, at] for seed, at in diverged.items()],
        "elapsed": elapsed,
        "extra": extra,
    }


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    return f"a {type(value).__name__}"


def _like(field: str, saved: Any, current: Tensor) -> None:
    """StateError unless `saved` is a tensor of `current`'s shape and dtype."""
    if not isinstance(saved, Tensor) or saved.shape != current.shape or saved.dtype != current.dtype:
        want = f"a {str(current.dtype).removeprefix('torch.')} tensor of shape {list(current.shape)}"
        raise StateError(field, f"{_describe(saved)}, {want} expected")


def _list(field: str, saved: Any, n: int) -> list[Any]:
    if not isinstance(saved, list) or len(saved) != n:
        got = f"{len(saved)} entries" if isinstance(saved, list) else _describe(saved)
        raise StateError(field, f"{got}, a list of {n} expected")
    return saved


def _int(field: str, value: Any, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"an int >= {low}" + (f" and <= {high}" if high is not None else "")
        raise StateError(field, f"{str(value)[:60] if isinstance(value, int) else _describe(value)}, {bound} expected")
    return value


def _optimizer(saved: Any, opt: Optimizer) -> None:
    """StateError unless `saved` holds this optimizer's state lists, each tensor shaped like the one it replaces."""
    current = opt.state_dict()
    if not isinstance(saved, dict) or set(saved) != set(current):
        got = str(sorted(map(str, saved)))[:100] if isinstance(saved, dict) else _describe(saved)
        raise StateError("optimizer", f"holds {got}, this {opt.kind} optimizer's {sorted(current)} expected")
    for name, values in current.items():
        for i, value in enumerate(_list(f"optimizer.{name}", saved[name], len(values))):
            field = f"optimizer.{name}.{i}"
            if value is None and values[i] is None:
                continue
            if value is None:
                raise StateError(field, f"None, {_describe(values[i])} expected")
            # a buffer made at the first step (momentum) is shaped like its parameter
            ref = values[i]  # a local, so that mypy narrows it
            _like(field, value, ref if ref is not None else opt.params[min(i, len(opt.params) - 1)])


def check_form(state: Any) -> None:
    """StateError naming the first field of a read-back state that is not what save() writes (keys and types), before
    any loop is built to compare it with."""
    if not isinstance(state, dict):
        raise StateError("(top level)", f"{_describe(state)}, a dict expected")
    for key in KEYS:
        if key not in state:
            raise StateError(key, "missing")
    _int("step", state["step"])
    kinds = {
        "pipeline": str,
        "tensors": list,
        "optimizer": dict,
        "generators": list,
        "alive": Tensor,
        "diverged": list,
        "extra": dict,
    }
    for key, kind in kinds.items():
        if not isinstance(state[key], kind):
            raise StateError(key, f"{_describe(state[key])}, a {kind.__name__} expected")
    for key in ("tensors", "generators"):
        for i, value in enumerate(state[key]):
            if not isinstance(value, Tensor):
                raise StateError(f"{key}.{i}", f"{_describe(value)}, a tensor expected")
    elapsed = state["elapsed"]
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not math.isfinite(elapsed) or elapsed < 0:
        raise StateError("elapsed", f"{str(elapsed)[:60]}, a finite number of seconds >= 0 expected")


def check(
    state: Any,
    pipeline: str,
    tensors: list[Tensor],
    opt: Optimizer,
    *,
    gens: list[torch.Generator],
    alive: Tensor,
    seeds: list[int],
    step: int,
    extras: dict[str, type],
) -> None:
    """StateError naming the first field of a saved `state` that does not fit this freshly built loop: every key, the
    tensors' shapes and dtypes, the optimizer's state, the generators' states, alive seeds, divergences, the `step` the
    checkpoint's epoch implies and the pipeline's `extras` (name -> type)."""
    check_form(state)
    if state["pipeline"] != pipeline:
        raise StateError("pipeline", f"{str(state['pipeline'])[:60]!r}, {pipeline!r} expected")
    if state["step"] != step:
        raise StateError("step", f"{state['step']}, but the checkpoint's epoch ends at step {step}")
    for i, (saved, current) in enumerate(zip(_list("tensors", state["tensors"], len(tensors)), tensors)):
        _like(f"tensors.{i}", saved, current)
    _optimizer(state["optimizer"], opt)
    for i, (saved, g) in enumerate(zip(_list("generators", state["generators"], len(gens)), gens)):
        _like(f"generators.{i}", saved, g.get_state())
        try:
            torch.Generator(device=g.device).set_state(saved)  # a scratch generator: the loop's own stay untouched
        except RuntimeError:
            raise StateError(f"generators.{i}", "not a valid generator state") from None
    _like("alive", state["alive"], alive)
    for i, pair in enumerate(state["diverged"]):
        if not isinstance(pair, list) or len(pair) != 2:
            raise StateError(f"diverged.{i}", f"{_describe(pair)}, a [seed, step] pair expected")
        if _int(f"diverged.{i}.0", pair[0], low=-(2**63)) not in seeds:
            raise StateError(f"diverged.{i}.0", f"seed {pair[0]} is not one of the run's seeds")
        _int(f"diverged.{i}.1", pair[1], high=step)
    for name, kind in extras.items():
        value = state["extra"].get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind):
            raise StateError(f"extra.{name}", f"{_describe(value)}, a {kind.__name__} expected")


@torch.no_grad()
def load(
    state: dict[str, Any],
    pipeline: str,
    tensors: list[Tensor],
    opt: Optimizer,
    *,
    gens: list[torch.Generator],
    alive: Tensor,
    diverged: dict[int, int],
    seeds: list[int],
    step: int,
    extras: dict[str, type],
) -> dict[str, Any]:
    """Put a save() back in place (same config, freshly built) once check() found every field fitting, so a bad state
    changes nothing; returns its step, elapsed time and extras."""
    check(state, pipeline, tensors, opt, gens=gens, alive=alive, seeds=seeds, step=step, extras=extras)
    for t, saved in zip(tensors, state["tensors"]):
        t.copy_(saved)
    opt.load_state_dict(state["optimizer"])
    for g, saved in zip(gens, state["generators"]):
        g.set_state(saved)
    alive.copy_(state["alive"])
    diverged.update({int(seed): int(at) for seed, at in state["diverged"]})
    return {"step": int(state["step"]), "elapsed": float(state["elapsed"]), **state["extra"]}
