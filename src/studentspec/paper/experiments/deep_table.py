"""docs/model.md 4.3's sample-size table at its sizes: multi 2, MSE, at 200 epochs and at a fixed budget.

The reference table of 4.3 came from an earlier run with a fixed budget of 2e7 back-propagated samples
per run; the paper's protocol trains 200 epochs at every N. This experiment runs both on the paper's
teacher ([50, 75, 100, 125], d = 20, C = 100) at multi 2 with MSE, so the two can be set beside the
reference; the budget's N = 200k job (100 epochs, the L-shape run's settings) keeps the theory diagnostics.
The full protocol (multi 2 and 5, MSE and CE, 10 seeds) is `reproduce deep`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import Analysis, Experiment, Part, merge
from .deep import BASE

NAME = "deep-table"

BUDGET = 20_000_000  # back-propagated samples per run of the reference table
SIZES = [5000, 10000, 20000, 50000, 100000, 200000, 500000]
LSHAPE_N = 200_000  # the L-shape run's training set: its budget job keeps the theory diagnostics
EVALS = 10  # evaluations per run

CAPTIONS = {
    "deep_table_vs_n": "Deep sample-size table (4.3): final rho_mean per layer and eval MSE vs training set size, "
    "at 200 epochs and at the fixed budget, beside the reference table (black).",
    "deep_lshape": "Deep L-shape (4.3) of the fixed-budget N = 200k run: rows = hidden layers (top first), "
    "columns = evenly spaced epochs; y = sqrt(E_x beta_kk).",
}


def _zips(sizes: list[int], *, epochs: int, budget: int, lshape_n: int) -> tuple[dict[str, list[Any]], ...]:
    """The zipped lists of the fixed-epochs part and of the fixed-budget part (epochs = budget / N)."""
    fixed: dict[str, list[Any]] = {"data.n_train": sizes, "eval.every": [max(1, epochs // EVALS)] * len(sizes)}
    per_n = [max(1, budget // n) for n in sizes]
    budgeted: dict[str, list[Any]] = {
        "data.n_train": sizes,
        "train.epochs": per_n,
        "eval.every": [max(1, e // EVALS) for e in per_n],
        "theory.enabled": [n == lshape_n for n in sizes],
    }
    return fixed, budgeted


@dataclass(frozen=True)
class Setting:
    """One scale's sizes N, its fixed number of epochs, its budget of samples and the N of the diagnostics run."""

    sizes: list[int]
    epochs: int
    budget: int
    lshape_n: int


SETTINGS = {
    "paper": Setting(SIZES, 200, BUDGET, LSHAPE_N),
    "quick": Setting([1000, 3000, 10000, 30000], 20, 600_000, 10000),  # the quick deep teacher [10, 10, 10, 10]
    "tiny": Setting([300, 600], 2, 1200, 600),
}


def parts(scale: str) -> list[Part]:
    """Two sweeps over N at multi 2, MSE: 'epochs' (a fixed number of epochs) and 'budget' (fixed samples)."""
    base = merge(BASE, {"seeds": [11, 12], "student": {"multi": 2.0}, "train": {"loss": "mse"}})
    if scale == "quick":
        base = merge(base, {"output_dim": 20, "teacher": {"widths": [10, 10, 10, 10]}, "data": {"n_eval": 4096}})
    elif scale == "tiny":
        small = {"input_dim": 6, "output_dim": 5, "teacher": {"widths": [4, 4]}, "data": {"n_eval": 300}}
        base = merge(base, small | {"seeds": [11], "theory": {"samples": 200}})
    s = SETTINGS[scale]
    fixed, budgeted = _zips(s.sizes, epochs=s.epochs, budget=s.budget, lshape_n=s.lshape_n)
    return [
        Part("epochs", merge(base, {"train": {"epochs": s.epochs}}), {}, fixed),
        Part("budget", base, {}, budgeted),
    ]


def analyze(out: Path, scale: str, figs: Path) -> Analysis:
    """The table beside the reference, its figure, the L-shape of the budget's diagnostics run, and the claims."""
    from ...sweep.grid import load_sweep
    from .. import claims as C
    from .. import grid_figures as F
    from . import results as R

    ecfg = R.part_config(out, "epochs")
    runs = {part: load_sweep(out / "sweep" / part) for part in ("epochs", "budget")}
    tables = {labels(scale)[part]: C.deep_table(run["scalars"]) for part, run in runs.items()}
    what = f"deep: rho_mean vs N, teacher {ecfg.teacher.widths}, multi {ecfg.student.multi:g}, MSE"
    paths = F.save(F.deep_table_vs_n(tables, C.DEEP_REFERENCE, R.title(ecfg, scale, what)), figs, "deep_table_vs_n")
    job = R.theory_job(out / "sweep" / "budget")
    cfg = R.job_config(job)
    students = runs["budget"]["students"]
    students = students[students["job"] == job.name].assign(**{F.MULTI: cfg.student.multi})
    what = f"deep L-shape, N = {cfg.data.n_train}, {cfg.train.epochs} epochs, multi {cfg.student.multi:g}"
    paths += F.save(F.deep_lshape(students, R.steps_per_epoch(cfg), R.title(cfg, scale, what)), figs, "deep_lshape")
    found = [C.deep_reference_match(tables, C.DEEP_REFERENCE)]
    for part, label in labels(scale).items():
        found += [
            C.deep_lowest_highest(runs[part]["scalars"], label=label),
            C.deep_upper_together(tables[label], label=label),
        ]
    found.append(C.lemma_identity(R.lemma_from_run(job)))
    return paths, found


def labels(scale: str) -> dict[str, str]:
    """Each part's label in the table, figure and claims: its number of epochs, or its budget of samples."""
    setting = SETTINGS[scale]
    return {"epochs": f"{setting.epochs} epochs", "budget": f"budget {setting.budget:,} samples"}


EXPERIMENT = Experiment(NAME, CAPTIONS, parts=parts, analyze=analyze)
