"""Per-evaluation metrics of MLP runs: the contract a metric declares, beside the fused evaluation pass.

A metric is one module declaring one `EvalMetric`: its name, the config switch that turns it on, what it
measures at every evaluation (`measure`, given a `Context`: the config, the nets, this step's evaluations and
the splits), the columns it adds to the stored tables (`Columns`) and/or a table of its own (`Table`: name,
schema, builder, memory per evaluation), and optionally a figure of a stored run (`Figure`). Metrics are
registered explicitly in ONE list, `theory.metric.METRICS` (the lowest layer that sees every metric module);
nothing registers itself on import. The pipeline hands a run the metrics its config switches on
(`Setup.metrics`), the trainer measures them, mlp/record.py stores what they declare, and the store writes any
table a record holds (summary.json lists them), so a new metric touches no other module.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import BaseModel
from torch import Tensor

from ..config import Config
from ..ensemble.registry import Registry
from ..store.record import check_table_name
from .evaluate import SplitEval
from .nets import Net

if TYPE_CHECKING:
    from ..store import Run


@dataclass(frozen=True)
class Context:
    """What a metric's `measure` sees at one evaluation: nothing else of the run."""

    cfg: Config
    teacher: Net  # float64 on the CPU: the reference copy that is stored
    teacher_run: Net  # the same teacher on the run's device and dtype
    student: Net
    step: int
    points: dict[str, SplitEval]  # split -> its evaluation at this step, in order: the first is the training split
    # (the eval set for online data)
    splits: dict[str, tuple[Tensor, Tensor]]  # split -> (inputs, labels) [S, N, ...] in the run's dtype

    @property
    def first(self) -> str:
        """The split metrics measure on: the training split (the eval set for online data)."""
        return next(iter(self.points))


@dataclass(frozen=True)
class Rows:
    """One evaluation's rows as mlp/record.py builds them: what a metric's columns are added to."""

    scalars: dict[str, Any]  # one row per seed: column -> [S] values
    teachers: list[pd.DataFrame]  # per hidden layer: one row per (seed, teacher node)
    students: list[pd.DataFrame]  # per hidden layer: one row per (seed, student node)


@dataclass(frozen=True)
class Columns:
    """The columns a metric adds to the three stored tables, each name a pattern (fnmatch: `ps_grad_*`)."""

    add: Callable[[Any, SplitEval, Rows], None]  # (its value, the first split's evaluation, the rows) -> None
    scalars: tuple[str, ...] = ()
    teachers: tuple[str, ...] = ()
    students: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    """A metric's own table, stored as NAME.parquet in the run dir and read back by `Run.table(NAME)`."""

    name: str
    columns: dict[str, str]  # its schema: column -> kind (integer, number, text, boolean), seed and step included
    # (cfg, teacher [float64, CPU], [(step, value) of every evaluation this process measured, in order], the rows a
    # resumed run's checkpoint restored or None) -> the whole table
    build: Callable[[Config, Net, list[tuple[int, Any]], pd.DataFrame | None], pd.DataFrame]
    bytes_per_eval: Callable[[Config], int]  # memory it holds per evaluation (mlp/memory.py adds it to the floor)

    def __post_init__(self) -> None:
        check_table_name(self.name)
        if self.columns.get("seed") != "integer" or self.columns.get("step") != "integer":
            raise ValueError(f"table {self.name!r}: its columns must include seed and step (integer)")


@dataclass(frozen=True)
class Figure:
    """A figure of a stored run that measured the metric, drawn by `plot` and captioned in `report`."""

    name: str  # figures/NAME.png and .pdf
    draw: (
        Callable[[Run], Any] | str
    )  # run -> matplotlib Figure; or "module:function" where the function lives above mlp
    caption: str

    def function(self) -> Callable[[Run], Any]:
        """The drawing function (a "module:function" reference imported on first use)."""
        if callable(self.draw):
            return self.draw
        module, _, name = self.draw.partition(":")
        return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class EvalMetric:
    """One per-evaluation metric of the MLP pipeline."""

    name: str
    title: str  # what it measures, for messages: "the weight-space order parameters"
    switch: str | None  # the dotted bool config key that turns it on; None: measured in every MLP run
    measure: Callable[[Context], Any]  # its value at one evaluation, kept until the run is recorded
    columns: Columns | None = None
    table: Table | None = None
    figure: Figure | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"metric name {self.name!r}: lowercase letters, digits and _ only")
        if self.switch is not None:
            _check_switch(self.switch)

    def on(self, cfg: Config) -> bool:
        """Whether a run of `cfg` measures this metric."""
        if self.switch is None:
            return True
        value: Any = cfg
        for part in self.switch.split("."):
            value = getattr(value, part)
        return bool(value)


def _check_switch(key: str) -> None:
    """ValueError unless `key` is a dotted bool key of the config (a switch nothing reads is a metric never on)."""
    model: Any = Config
    *parents, last = key.split(".")
    for part in parents:
        field = model.model_fields.get(part)
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ValueError(f"metric switch {key!r}: {part!r} is not a section of the config")
    field = model.model_fields.get(last)
    if field is None or field.annotation is not bool:
        raise ValueError(f"metric switch {key!r}: not a true/false key of the config")


class MetricRegistry(Registry[EvalMetric]):
    """The registered metrics: names and table names unique."""

    def __init__(self, metrics: Iterable[EvalMetric] = ()) -> None:
        super().__init__("per-evaluation metric")
        for m in metrics:
            self.register(m)

    def register(self, entry: EvalMetric) -> EvalMetric:
        """Add a metric (one call registers one defined anywhere, e.g. outside the package)."""
        if not isinstance(entry, EvalMetric):
            raise TypeError(f"not an EvalMetric: {entry!r}")
        mine = {m.table.name: m.name for m in self.values() if m.table is not None}
        table = entry.table.name if entry.table is not None else None
        if table in mine and entry.name not in self:
            raise ValueError(f"metric {entry.name!r}: table {table!r} is already stored by metric {mine[table]!r}")
        return super().register(entry)

    def enabled(self, cfg: Config) -> tuple[EvalMetric, ...]:
        """The registered metrics a run of `cfg` measures (registration order); ValueError if a metric module of the
        package that is loaded declares a metric missing from this registry (it would never be measured)."""
        check_listed(self, (m for name, m in list(sys.modules.items()) if name.startswith("studentspec.")))
        return tuple(m for m in self.values() if m.on(cfg))


def check_listed(registry: Registry[EvalMetric], modules: Iterable[ModuleType | None]) -> None:
    """ValueError naming the first metric declared at module level in `modules` that `registry` does not hold."""
    for module in modules:
        if module is None:
            continue
        for value in vars(module).values():
            if isinstance(value, EvalMetric) and (value.name not in registry or registry.get(value.name) is not value):
                raise ValueError(
                    f"metric {value.name!r} of {module.__name__} is not in the list of metrics "
                    f"(theory/metric.py METRICS): add it there, or it is never measured"
                )


def check_columns(metric: EvalMetric, table: str, before: Iterable[str], after: Iterable[str]) -> None:
    """ValueError when a metric added a column to `table` that it does not declare (its Columns patterns)."""
    declared = getattr(metric.columns, table, ()) if metric.columns is not None else ()
    for col in sorted(set(after) - set(before)):
        if not any(fnmatch.fnmatchcase(col, p) for p in declared):
            raise ValueError(
                f"metric {metric.name!r} added column {col!r} to {table}, which its Columns do not declare"
            )


def check_table(metric: EvalMetric, df: pd.DataFrame) -> pd.DataFrame:
    """`df` when it holds the columns the metric's Table declares; ValueError naming the column otherwise."""
    assert metric.table is not None
    missing = [c for c in metric.table.columns if c not in df.columns]
    if missing:
        raise ValueError(f"metric {metric.name!r}: its table lacks the declared column {missing[0]!r}")
    return df
