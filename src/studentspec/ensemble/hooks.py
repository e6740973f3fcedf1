"""What a caller may attach to a training run: a progress bar and a callback per evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Hooks:
    """Options of `train(setup, hooks)` that change what is shown or observed, never what is computed."""

    progress: bool = True  # a tqdm bar on stderr
    on_eval: Callable[[Any], None] | None = None  # called with each evaluation's points as they are made
