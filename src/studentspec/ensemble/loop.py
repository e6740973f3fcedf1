"""The one epoch loop of every pipeline (mlp/train.py, conv/train.py), and the interface of the steps it takes.

A pipeline builds its `Loop` (the state a checkpoint saves), puts a checkpoint back (`resume`), picks its step
`Strategy` once, and hands them to `run`, which does what every run does the same way: an evaluation before
training (unless resumed), every `eval_every` epochs and after the last; the divergence freeze (`Divergence`: a
seed whose loss is not finite is reported once and frozen, the others go on); a checkpoint every
`checkpoint_every` epochs, not after the last (the run dir is written then); the progress bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .hooks import Evaluation, Hooks
from .optim import Optimizer, frozen, seed_mask


class Divergence:
    """The divergence freeze's bookkeeping: the seeds alive ([S] bool, updated in place), the step each of the others
    went non-finite at (seed -> step), and the step being taken (`run` advances it)."""

    def __init__(self, seeds: list[int], alive: Tensor, diverged: dict[int, int], step: int = 0) -> None:
        self.seeds, self.alive, self.diverged, self.step = seeds, alive, diverged, step

    def check(self, loss: Tensor) -> bool:
        """True while every seed is healthy; a seed whose loss [S] is not finite is marked dead (once) and reported."""
        finite = torch.isfinite(loss)
        if bool(finite.all()) and not self.diverged:
            return True
        for i in torch.nonzero(self.alive & ~finite).flatten().tolist():
            seed = self.seeds[i]
            self.diverged[seed] = self.step
            tqdm.write(f"seed {seed}: loss is not finite at step {self.step}; this seed is frozen, the others go on")
        self.alive &= finite
        return False

    def guard(self, ok: bool, opt: Optimizer) -> AbstractContextManager[None]:
        """Around an update: nothing while every seed is healthy (`ok` from check()), else the freeze that puts every
        dead seed's parameters and optimizer state back (ensemble.optim.frozen)."""
        return nullcontext() if ok else frozen(self.alive, opt)

    def masked(self, t: Tensor) -> Tensor:
        """`t` [S, ...] with every dead seed's slice zeroed (its gradient, so the update leaves it finite)."""
        return torch.where(seed_mask(self.alive, t), t, 0.0)


class Strategy(Protocol):
    """How a run takes its steps, chosen once before the loop: each step of an epoch, in order, yielding its per-seed
    loss [S]. A step calls `div.check` on its loss once (before its update where it can) and leaves dead seeds as
    they were; what it carries across epochs lives in the pipeline's Loop, so that a checkpoint holds it."""

    name: str

    def epoch(self, epoch: int, lr: float, div: Divergence) -> Iterator[Tensor]:
        """The steps of epoch `epoch` (0-based) at learning rate `lr`."""
        ...


@dataclass
class RunResult:
    """What every pipeline's finished run holds of its loop; a pipeline's Result adds its own fields."""

    setup: Any
    evals: list[Any] = field(default_factory=list)  # the pipeline's points, in the order they were made
    diverged: dict[int, int] = field(default_factory=dict)  # seed -> step its loss went non-finite
    steps: int = 0
    wall_time: float = 0.0
    restored: dict[str, Any] = field(default_factory=dict)  # a resumed run's earlier evaluations: table -> DataFrame
    resumed_from: int | None = None  # the epoch a resumed run's checkpoint was written after


@dataclass
class Loop:
    """The training loop between epochs: what a checkpoint saves (mlp/checkpoint.py, conv/checkpoint.py) and a resume
    restores; a pipeline's Loop adds what else it carries across epochs."""

    setup: Any
    result: Any  # the pipeline's RunResult
    opt: Optimizer
    alive: Tensor  # [S] bool, False once a seed diverged
    start: float  # perf_counter origin of the run's wall time (a resume moves it back by the time already spent)
    epoch: int = 0  # epochs completed
    step: int = 0


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """When the loop does what, in epochs (each of `steps_per_epoch` steps)."""

    epochs: int
    steps_per_epoch: int
    lr: Callable[[int], float]  # an epoch's learning rate (config.lr_at)
    eval_every: int
    checkpoint_every: int | None = 0  # 0 or None (train.checkpoint_every: null): no checkpoints
    bar_every: int = 100  # steps between two updates of the progress bar (each reads the loss from the device)


def resume(loop: Loop, hooks: Hooks) -> None:
    """Put a checkpoint's state into a freshly built `loop` (hooks.resume, when the caller resumes), before the step
    strategy is chosen from it."""
    if hooks.resume is not None:
        hooks.resume(loop)


class _Progress:
    """The progress bar: steps, the last evaluation's summary and, every `every` steps, the alive seeds' mean loss."""

    def __init__(self, loop: Loop, schedule: Schedule, on: bool) -> None:
        total = schedule.epochs * schedule.steps_per_epoch
        self.bar = tqdm(total=total, initial=loop.step, disable=not on, unit="step", dynamic_ncols=True)
        self.postfix: dict[str, str] = {}

    def evaluated(self, ev: Evaluation) -> None:
        self.postfix = ev.summary
        self.bar.set_postfix(self.postfix, refresh=False)

    def stepped(self, every: int, loss: Tensor, alive: Tensor) -> None:
        self.bar.update(every)
        self.bar.set_postfix(self.postfix | {"loss": f"{loss[alive].mean().item():.3g}"}, refresh=False)

    def close(self, step: int) -> None:
        self.bar.update(step - self.bar.n)
        self.bar.close()


def run(
    loop: Loop,
    steps: Strategy,
    *,
    schedule: Schedule,
    evaluate: Callable[[int, int], Evaluation],
    seeds: list[int],
    hooks: Hooks,
) -> None:
    """Train from `loop`'s epoch to the last with `steps`, evaluating (`evaluate(step, epoch)`, then hooks.on_eval) and
    checkpointing on `schedule`; the result's steps, wall time and divergences are filled in."""
    progress = _Progress(loop, schedule, hooks.progress)

    def observe(step: int, epoch: int) -> None:
        ev = evaluate(step, epoch)
        if hooks.on_eval is not None:
            hooks.on_eval(ev)
        progress.evaluated(ev)

    div = Divergence(seeds, loop.alive, loop.result.diverged, loop.step)
    every, shown = schedule.bar_every, hooks.progress
    if loop.epoch == 0:  # a resumed run's checkpoint holds its earlier evaluations
        observe(0, 0)
    step = loop.step
    for epoch in range(loop.epoch, schedule.epochs):
        for loss in steps.epoch(epoch, schedule.lr(epoch), div):
            step += 1
            div.step = step
            if step % every == 0 and shown:
                progress.stepped(every, loss, loop.alive)
        if (epoch + 1) % schedule.eval_every == 0 or epoch + 1 == schedule.epochs:
            observe(step, epoch + 1)
        loop.epoch, loop.step = epoch + 1, step
        due = schedule.checkpoint_every and (epoch + 1) % schedule.checkpoint_every == 0
        if hooks.checkpoint is not None and due and epoch + 1 < schedule.epochs:
            hooks.checkpoint(loop)
    progress.close(step)
    loop.result.steps = step
    loop.result.wall_time = time.perf_counter() - loop.start
