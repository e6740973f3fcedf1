"""What a caller may attach to a training run: a progress bar, a callback per evaluation, checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a run, as `Hooks.on_eval` receives it from every pipeline (ensemble/loop.py calls it)."""

    step: int  # steps taken before it
    epoch: int  # epochs completed before it
    points: list[Any]  # the pipeline's records of it: mlp one EvalPoint per split (train first), conv one ConvPoint
    summary: dict[str, str] = field(default_factory=dict)  # a few of its numbers, formatted for the progress bar


@dataclass(frozen=True)
class Hooks:
    """Options of `train(setup, hooks)` that change what is shown, observed or saved, never what is computed."""

    progress: bool = True  # a tqdm bar on stderr
    on_eval: Callable[[Evaluation], None] | None = None  # called with each evaluation as it is made
    # the loop's state between epochs (the pipeline's Loop): `resume` fills it in before the first epoch, `checkpoint`
    # is called with it every train.checkpoint_every epochs (not after the last: the run dir is written then)
    resume: Callable[[Any], None] | None = None
    checkpoint: Callable[[Any], None] | None = None


# the default of every pipeline's train(): Hooks is frozen, so one shared instance is safe
DEFAULT_HOOKS = Hooks()
