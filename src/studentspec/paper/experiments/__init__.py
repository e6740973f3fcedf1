"""The experiments of `studentspec reproduce`, one module each, registered in one explicit list.

`EXPERIMENTS` is read by the orchestrator (`paper.reproduce`: configs, sweeps, analysis, report), by
the CLI (the names `reproduce` accepts) and by `paper.report` (captions, an experiment's own report
body). Adding an experiment is one module declaring an `Experiment` (`base.py`), its claims
(`paper/claims.py`) and figures, and one entry below. Importing this package loads no torch, pandas
or matplotlib (each analysis imports what it needs when it runs).
"""

from __future__ import annotations

from ...config import ConfigError
from . import cifar10, deep, deep_table, images, online, sample_complexity, two_layer
from .base import SCALES, Analysis, Experiment, Part

__all__ = ["EXPERIMENTS", "SCALES", "Analysis", "Experiment", "Part", "get"]

# in the paper's order (docs/model.md 4.1-4.4, then 4.4's protocol on other image sets): the CLI lists them so
EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        two_layer.EXPERIMENT,
        sample_complexity.EXPERIMENT,
        deep.EXPERIMENT,
        cifar10.EXPERIMENT,
        images.EXPERIMENT,
        deep_table.EXPERIMENT,  # 4.3's reference table at its sizes: a fixed number of epochs and a fixed budget
        online.EXPERIMENT,  # docs/model.md 6: the online-learning theory beside the simulations
    )
}


def get(name: str) -> Experiment:
    """The registered experiment `name`; ConfigError naming the registered ones otherwise."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"reproduce: unknown experiment {name!r} (one of {', '.join(EXPERIMENTS)})")
    return EXPERIMENTS[name]
