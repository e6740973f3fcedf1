"""What a checkpoint of an MLP run holds, and how a resume puts it back (the files: store/checkpoint.py).

Between epochs the loop is described by the student's tensors (BatchNorm statistics included), the
optimizer's state, the data and sampler generators, the alive seeds (and when the others diverged),
the evaluations so far and the time spent. Everything else is rebuilt from the config: the teacher,
the evaluation set and the fixed training set are drawn again from their seeded generators (a
regenerated training set is drawn at the next epoch's start from the restored generators), so a
resumed run's numbers are bitwise those of an uninterrupted one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from ..ensemble import loopstate
from ..store import StoreError
from .record import metric_tables, tables
from .train import Loop


def _tensors(loop: Loop) -> list[Tensor]:
    net = loop.setup.student
    return [*net.parameters(), *(t for bn in net.norms for t in (bn.running_mean, bn.running_var))]


def _generators(loop: Loop) -> list[torch.Generator]:
    return [*loop.setup.stream.data_gens, *loop.setup.stream.sampler_gens]


def snapshot(loop: Loop) -> tuple[int, dict[str, Any], dict[str, pd.DataFrame]]:
    """(epochs done, the loop's state, the evaluation tables so far) between two epochs."""
    r = loop.result
    state = loopstate.save(
        "mlp",
        _tensors(loop),
        loop.opt,
        _generators(loop),
        alive=loop.alive,
        diverged=r.diverged,
        step=loop.step,
        elapsed=time.perf_counter() - loop.start,
        eval_time=r.eval_time,
    )
    scalars, teachers, students = tables(r)
    return loop.epoch, state, {"scalars": scalars, "teachers": teachers, "students": students, **metric_tables(r)}


def restore(
    loop: Loop, epoch: int, state: dict[str, Any], frames: dict[str, pd.DataFrame], *, file: Path | str = "state.pt"
) -> None:
    """Put a snapshot back into a freshly built loop of the same config, in place, once every tensor and number fits it;
    StoreError naming `file` (the checkpoint's state.pt) and the field otherwise, with nothing restored."""
    step = epoch * loop.setup.stream.steps_per_epoch()
    try:
        got = loopstate.load(
            state,
            "mlp",
            _tensors(loop),
            loop.opt,
            gens=_generators(loop),
            alive=loop.alive,
            diverged=loop.result.diverged,
            seeds=loop.setup.cfg.seeds,
            step=step,
            extras={"eval_time": float},
        )
    except loopstate.StateError as err:
        raise StoreError(f"{file}: {err}") from None
    loop.result.eval_time, loop.result.restored = float(got["eval_time"]), frames
    loop.start -= got["elapsed"]
    loop.epoch, loop.step = epoch, got["step"]
    loop.result.resumed_from = epoch
