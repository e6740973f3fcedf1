"""docs/model.md 4.3: deep students of a deep teacher (the L-shape per layer, rho_mean against training set size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Analysis, Experiment, Part, merge

NAME = "deep"

BASE: dict[str, Any] = {  # 4.3
    "seeds": list(range(11, 21)),
    "input_dim": 20,
    "output_dim": 100,
    "teacher": {"widths": [50, 75, 100, 125], "activation": "relu", "recipe": "deep", "decay": 0.0, "tune": True},
    "student": {"multi": 2.0, "init_std": None, "init_scale": 1.0},
    "data": {"kind": "gaussian", "std": 10.0, "n_train": 200000, "n_eval": 10240},
    "train": {
        "optimizer": "sgd",
        "lr": {0: 0.2, 20: 0.1},
        "batch_size": 64,
        "sampling": "shuffle",
        "steps_per_epoch": None,
        "epochs": 100,
        "loss": "mse",
        "dtype": "float32",
        "threads": 1,
    },
    "eval": {"every": 5, "threshold": 0.95, "grad_norm": False},
}

CAPTIONS = {
    "deep_lshape": "Deep L-shape (4.3): rows = hidden layers (top first), "
    "columns = evenly spaced epochs; y = sqrt(E_x beta_kk).",
    "deep_rho_vs_n": "Deep sample complexity (4.3): final rho_mean per layer "
    "and eval MSE vs training set size, MSE and CE training.",
}


def parts(scale: str) -> list[Part]:
    """The L-shape run (theory diagnostics on) and the sweep over training set size, multi and loss."""
    lshape = merge(BASE, {"seeds": [11, 12], "theory": {"enabled": True}})
    sample = merge(BASE, {"train": {"epochs": 200}, "eval": {"every": 20}})
    grid: dict[str, list[Any]] = {"student.multi": [2.0, 5.0], "train.loss": ["mse", "ce"]}
    zipped: dict[str, list[Any]] = {"data.n_train": [5000, 10000, 20000, 50000, 100000, 200000, 500000]}
    if scale == "quick":  # a [10,10,10,10] teacher; a fixed budget of 6e5 back-propagated samples per run
        small = {"output_dim": 20, "teacher": {"widths": [10, 10, 10, 10]}, "data": {"n_eval": 4096}}
        lshape = merge(
            BASE,
            small
            | {
                "seeds": [11, 12],
                "student": {"multi": 5.0},
                "data": {"n_train": 20000, "n_eval": 4096},
                "train": {"epochs": 60},
                "theory": {"enabled": True},
            },
        )
        sample = merge(BASE, small | {"seeds": [11, 12]})
        zipped = {
            "data.n_train": [1000, 3000, 10000, 30000],
            "train.epochs": [600, 200, 60, 20],
            "eval.every": [150, 50, 15, 5],
        }
    elif scale == "tiny":
        small = {"input_dim": 6, "output_dim": 5, "teacher": {"widths": [4, 4]}, "data": {"n_eval": 300}}
        lshape = merge(
            BASE,
            small
            | {
                "seeds": [11, 12],
                "data": {"n_train": 500, "n_eval": 300},
                "train": {"epochs": 4},
                "eval": {"every": 1},
                "theory": {"enabled": True, "samples": 200},
            },
        )
        sample = merge(BASE, small | {"seeds": [11]})
        grid = {"student.multi": [2.0], "train.loss": ["mse", "ce"]}
        zipped = {"data.n_train": [300, 600], "train.epochs": [4, 2], "eval.every": [2, 1]}
    # one seed per job: the single L-shape point would otherwise keep all but one worker idle
    return [Part("lshape", lshape, {}, ensemble_size=1), Part("sample", sample, grid, zipped)]


def analyze(out: Path, scale: str, figs: Path) -> Analysis:
    """The deep L-shape and rho-vs-N figures and their claims, from the stored sweeps."""
    from ...sweep.grid import load_sweep
    from .. import claims as C
    from .. import grid_figures as F
    from . import results as R

    lcfg, scfg = R.part_config(out, "lshape"), R.part_config(out, "sample")
    lsh, smp = load_sweep(out / "sweep" / "lshape"), load_sweep(out / "sweep" / "sample")
    students = lsh["students"].assign(**{F.MULTI: lcfg.student.multi})
    what = f"deep L-shape, teacher {lcfg.teacher.widths}, multi {lcfg.student.multi:g}"
    paths = F.save(F.deep_lshape(students, R.steps_per_epoch(lcfg), R.title(lcfg, scale, what)), figs, "deep_lshape")
    what = f"deep: rho_mean vs N, teacher {scfg.teacher.widths}"
    paths += F.save(F.deep_rho_vs_n(smp["scalars"], R.title(scfg, scale, what)), figs, "deep_rho_vs_n")
    found = [
        C.deep_lowest_highest(smp["scalars"]),
        C.deep_lowest_to_one(smp["scalars"]),
        C.lemma_identity(R.lemma_from_run(R.first_job(out / "sweep" / "lshape"))),
    ]
    return paths, found


EXPERIMENT = Experiment(NAME, CAPTIONS, parts=parts, analyze=analyze)
