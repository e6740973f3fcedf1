"""docs/model.md 4.2: teacher-aware against Gaussian training data, over training set sizes (sample complexity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Analysis, Experiment, Part, merge
from .two_layer import BASE as TWO_LAYER
from .two_layer import MULTIS

NAME = "sample-complexity"

BASE: dict[str, Any] = merge(
    TWO_LAYER,
    {  # 4.2
        "teacher": {"widths": [5], "decay": 1.0},
        "train": {"steps_per_epoch": 5000, "epochs": 20},
    },
)
SAMPLE_NS = [*range(30, 196, 15), 210, 270, 330, 390, 510, 630, 810, 1110]

CAPTIONS = {
    "sample_complexity": "Sample complexity (4.2): teacher-aware (solid) "
    "vs Gaussian (dashed) data, mean ± std over seeds.",
}


def parts(scale: str) -> list[Part]:
    """One sweep over data kind, training set size and multi."""
    base, multis, ns = BASE, MULTIS, SAMPLE_NS
    if scale == "quick":  # paper d, m, C and multis; 4 seeds, 2e4 steps, 9 sizes
        base = merge(
            BASE,
            {
                "seeds": [1, 2, 3, 4],
                "data": {"n_eval": 2000},
                "train": {"steps_per_epoch": 2000, "epochs": 10},
                "eval": {"every": 5},
            },
        )
        multis, ns = MULTIS, [30, 60, 90, 120, 180, 270, 390, 630, 1110]  # 9 of the paper's 19 sizes
    elif scale == "tiny":
        base = merge(
            BASE,
            {
                "seeds": [1, 2],
                "input_dim": 8,
                "output_dim": 4,
                "teacher": {"widths": [2]},
                "data": {"n_eval": 200},
                "train": {"steps_per_epoch": 100, "epochs": 2},
            },
        )
        multis, ns = [2.0], [12, 48]
    return [
        Part("sample", base, {"data.kind": ["teacher_aware", "gaussian"], "data.n_train": ns, "student.multi": multis})
    ]


def analyze(out: Path, scale: str, figs: Path) -> Analysis:
    """The sample-complexity figure and its claim, from the stored sweep."""
    from ...sweep.grid import load_sweep
    from .. import claims as C
    from .. import grid_figures as F
    from . import results as R

    cfg = R.part_config(out, "sample")
    t = load_sweep(out / "sweep" / "sample")
    what = f"teacher-aware vs Gaussian data, m={cfg.teacher.widths[0]}"
    paths = F.save(
        F.sample_complexity(t["scalars"], t["teachers"], R.title(cfg, scale, what)), figs, "sample_complexity"
    )
    return paths, [C.teacher_aware_fewer_samples(t["teachers"])]


EXPERIMENT = Experiment(NAME, CAPTIONS, parts=parts, analyze=analyze)
