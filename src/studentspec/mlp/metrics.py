"""Per-evaluation metrics: an extension point beside the fused evaluation pass (MSE, loss, correlations, gradient norms).

A metric is registered once (`register(EvalMetric(...))`, e.g. by studentspec.theory for the
Lemma diagnostics). At every evaluation the trainer calls `measure` of each metric whose
`enabled(cfg)` holds, keeps the value in the point's `extra[name]`, and mlp/record.py asks the
metric's `columns` to add what it stores to the tables.
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
    columns: Callable[[Any, Any, dict[str, Any], list[Any], list[Any]], None]


METRICS: Registry[EvalMetric] = Registry("per-evaluation metric")
register = METRICS.register

# the config keys that ask for a metric registered outside mlp (by studentspec.theory)
_WANTED: dict[str, Callable[[Config], bool]] = {"theory": lambda cfg: cfg.theory.enabled}


def enabled(cfg: Config) -> list[EvalMetric]:
    """The registered metrics this config measures; ConfigError if it asks for one that is not registered."""
    for name, wants in _WANTED.items():
        if wants(cfg) and name not in METRICS:
            raise ConfigError(f"{name}.enabled: the {name!r} metric is not registered (import studentspec.{name})")
    return [m for m in METRICS.values() if m.enabled(cfg)]
