"""Every per-evaluation metric of MLP runs, in one list: METRICS (the contract is mlp/metrics.py).

A metric is measured only when it is in this list, which is why the list lives here, the lowest layer that
sees every metric module (the Lemma's diagnostics live in theory/). Nothing registers itself on import: a
metric declared in a module of the package but missing here is an error (MetricRegistry.enabled when the
module is loaded; tests/test_metrics.py for every module). A metric defined outside the package is added
with one call, `METRICS.register(metric)`.
"""

from __future__ import annotations

from ..mlp import order
from ..mlp.metrics import MetricRegistry
from . import lemma

# in the order their columns join the tables and their figures' captions the report
METRICS = MetricRegistry(
    [
        lemma.METRIC,  # theory.enabled: columns of the three tables
        order.METRIC,  # eval.order: order.parquet
    ]
)
