"""What a checkpoint of a conv run holds, and how a resume puts it back (the files: store/checkpoint.py).

Between epochs: the student's tensors (BatchNorm statistics included), the optimizer's state, the
batch-order and augmentation generators, the alive seeds, the training loss summed since the last
evaluation, the evaluations so far and the time spent; the teacher and the images are loaded again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
from torch import Tensor

from ..config import steps_per_epoch
from ..ensemble import loopstate
from ..store import StoreError
from .record import conv_tables
from .train import ConvLoop


def _tensors(loop: ConvLoop) -> list[Tensor]:
    net = loop.setup.student
    return [*net.parameters(), *(t for bn in net.norms for t in (bn.running_mean, bn.running_var)), loop.loss_sum]


def snapshot(loop: ConvLoop) -> tuple[int, dict[str, Any], dict[str, pd.DataFrame]]:
    """(epochs done, the loop's state, the evaluation tables so far) between two epochs."""
    r = loop.result
    state = loopstate.save(
        "conv",
        _tensors(loop),
        loop.opt,
        [*loop.samplers, *loop.augs],
        alive=loop.alive,
        diverged=r.diverged,
        step=loop.step,
        elapsed=time.perf_counter() - loop.start,
        loss_n=loop.loss_n,
    )
    scalars, teachers, students = conv_tables(r)
    return loop.epoch, state, {"scalars": scalars, "teachers": teachers, "students": students}


def restore(
    loop: ConvLoop,
    epoch: int,
    state: dict[str, Any],
    frames: dict[str, pd.DataFrame],
    *,
    file: Path | str = "state.pt",
) -> None:
    """Put a snapshot back into a freshly built loop of the same config, in place, once every tensor and number fits it;
    StoreError naming `file` (the checkpoint's state.pt) and the field otherwise, with nothing restored."""
    cfg = loop.setup.cfg
    step = epoch * steps_per_epoch(cfg.train, loop.setup.data.train_x.shape[0])
    try:
        got = loopstate.load(
            state,
            "conv",
            _tensors(loop),
            loop.opt,
            gens=[*loop.samplers, *loop.augs],
            alive=loop.alive,
            diverged=loop.result.diverged,
            seeds=cfg.seeds,
            step=step,
            extras={"loss_n": int},
        )
    except loopstate.StateError as err:
        raise StoreError(f"{file}: {err}") from None
    loop.loss_n, loop.result.restored = int(got["loss_n"]), frames
    loop.start -= got["elapsed"]
    loop.epoch, loop.step = epoch, got["step"]
    loop.result.resumed_from = epoch
