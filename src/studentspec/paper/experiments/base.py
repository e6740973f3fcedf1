"""What every experiment module declares: its sweep `Part`s per scale and one `Experiment` record.

Importing this module (and the experiment modules, which import only it and `config` at module level)
loads no torch, pandas or matplotlib: the CLI reads the registry for its choices. An experiment's
analysis imports what it draws and measures when it runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

SCALES = ("tiny", "quick", "paper")

# an analysis: the figure files it wrote (in the paper's order) and its claim records (paper/claims.py)
Analysis = tuple[list[Path], list[dict[str, Any]]]


@dataclass(frozen=True)
class Part:
    """One sweep of an experiment: a full config tree, a product grid and lists zipped in step."""

    name: str
    config: dict[str, Any]
    grid: dict[str, list[Any]]
    zip: dict[str, list[Any]] = field(default_factory=dict)
    ensemble_size: int | None = None  # seeds per job; None = all seeds of a grid point in one batched job


class Run(Protocol):
    """An experiment's own pipeline: train, keep every stage in `out`, resume what is there."""

    def __call__(
        self, out: Path, scale: str, overrides: list[str], /, *, progress: bool, dataset: str | None = None
    ) -> object: ...


@dataclass(frozen=True)
class Experiment:
    """One experiment of `studentspec reproduce`, as the orchestrator, the CLI and the report read it.

    Either sweeps: `parts(scale)` (the configs to sweep) and `analyze(out, scale, figures_dir)` (figures
    and claims from the stored runs), which `paper.reproduce` runs, analyzes and reports; or its own
    pipeline: `run(out, scale, overrides, progress=..., dataset=...)`. `report_body(out, redraw)`, when given, is
    the HTML of its report page (below the title); otherwise the page shows claims, figures and sweeps.
    `dry_run(scale, dataset)`, when given, is the text of `reproduce NAME --scale S --dry-run` for an experiment with
    its own pipeline (its stages' cost, conv/cost.py; it writes nothing); without it such a dry run is refused.
    `captions` name its figures' captions by figure name. `datasets` are the values its `--dataset` takes, the
    first the default (empty: it takes no --dataset).
    """

    name: str
    captions: dict[str, str]
    parts: Callable[[str], list[Part]] | None = None
    analyze: Callable[[Path, str, Path], Analysis] | None = None
    run: Run | None = None
    report_body: Callable[[Path, bool], str] | None = None
    datasets: tuple[str, ...] = ()
    dry_run: Callable[[str, str | None], str] | None = None
    # work besides the sweeps that `reproduce --dry-run` does not project (e.g. ODE solves in the analysis)
    unmodelled: str = ""

    def __post_init__(self) -> None:
        sweeps = self.parts is not None and self.analyze is not None
        if (self.parts is None) != (self.analyze is None) or sweeps == (self.run is not None):
            raise TypeError(
                f"experiment {self.name}: give parts and analyze (sweeps), or run (its own pipeline), not both"
            )

    def default_out(self, scale: str, dataset: str | None = None) -> str:
        """runs/reproduce/NAME-SCALE, or NAME-DATASET-SCALE when it takes datasets (None: the default one)."""
        if self.datasets:
            return f"runs/reproduce/{self.name}-{dataset or self.datasets[0]}-{scale}"
        return f"runs/reproduce/{self.name}-{scale}"


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update (a new dict; dict-valued lr schedules are replaced, not merged)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "lr":
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
