"""Per-evaluation metrics: an extension point beside the fused evaluation pass (MSE, loss, correlations, gradient norms).

A metric is registered once (`register(EvalMetric(...))`, e.g. by studentspec.theory for the
Lemma diagnostics). At every evaluation the trainer calls `measure` of each metric whose
`enabled(cfg)` holds, keeps the value in the point's `extra[name]`, and mlp/record.py asks the
metric's `columns` to add what it stores to the tables. A metric may also store a table of its own
(`table_name`, e.g. "order" -> order.parquet; the store lists the names a run dir may hold in
store.record.EXTRA_TABLES): mlp/record.py calls `table` once per run with every measured point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import Config, ConfigError
from ..ensemble.registry import Registry


@dataclass(frozen=True)
class EvalMetric:
    """One per-evaluation metric of the MLP pipeline."""

    name: str
    enabled: Callable[[Config], bool]  # whether a run of this config measures it
    # (setup, this evaluation's points) -> its value; points[0] is the training split (the eval set for online data)
    measure: Callable[[Any, list[Any]], Any]
    # (point, value, scalars row, teacher frames per layer, student frames per layer) -> None: add its stored columns
    columns: Callable[[Any, Any, dict[str, Any], list[Any], list[Any]], None] | None = None
    # (setup, [(point, value) of every evaluation this process measured, in order], the table a resumed run's
    # checkpoint restored or None) -> its whole DataFrame, stored as `table_name`.parquet; both or neither are given
    table: Callable[[Any, list[tuple[Any, Any]], Any], Any] | None = None
    table_name: str | None = None

    def __post_init__(self) -> None:
        if (self.table is None) != (self.table_name is None):
            raise ValueError(f"metric {self.name!r}: give both table and table_name, or neither")


METRICS: Registry[EvalMetric] = Registry("per-evaluation metric")
register = METRICS.register

# the config keys that ask for a metric registered outside mlp (by studentspec.theory)
# metric name -> (the key asking for it, whether a config asks, the module that registers it)
_WANTED: dict[str, tuple[str, Callable[[Config], bool], str]] = {
    "theory": ("theory.enabled", lambda cfg: cfg.theory.enabled, "studentspec.theory"),
    "order": ("eval.order", lambda cfg: cfg.eval.order, "studentspec.mlp.order"),
}


def enabled(cfg: Config) -> list[EvalMetric]:
    """The registered metrics this config measures; ConfigError if it asks for one that is not registered."""
    for name, (key, wants, module) in _WANTED.items():
        if wants(cfg) and name not in METRICS:
            raise ConfigError(f"{key}: the {name!r} metric is not registered (import {module})")
    return [m for m in METRICS.values() if m.enabled(cfg)]
