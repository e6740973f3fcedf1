"""docs/model.md 4.1: two-layer students of a two-layer teacher
with decaying fan-out (L-shape, success rates, convergence)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Analysis, Experiment, Part, merge

NAME = "two-layer"

BASE: dict[str, Any] = {  # 4.1
    "seeds": list(range(1, 33)),
    "input_dim": 100,
    "output_dim": 50,
    "teacher": {"widths": [10], "activation": "relu", "recipe": "two_layer", "decay": 1.0, "bias": -0.1},
    "student": {"multi": 5.0, "init_std": 0.005},
    "data": {"kind": "gaussian", "std": 1.5, "n_train": 10000, "n_eval": 10000},
    "train": {
        "optimizer": "sgd",
        "lr": 0.01,
        "batch_size": 16,
        "sampling": "replacement",
        "steps_per_epoch": 1000,
        "epochs": 100,
        "loss": "half_sse",
        "dtype": "float64",
        "threads": 1,
    },
    "eval": {"every": 1, "threshold": 0.95, "grad_norm": False},  # gradient norms are not used by any figure or claim
}
MULTIS = [1.0, 2.0, 5.0, 10.0]
DECAYS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]

CAPTIONS = {
    "lshape": "L-shape (4.1a): every student node at the end; x = "
    "best teacher correlation (training set), y = fan-out norm.",
    "success_rate": "Success rate (4.1b): fraction of seeds whose teacher node reaches best eval correlation > "
    "eval.threshold (0.95 in every preset); dotted after 5 epochs, solid at the end.",
    "convergence": "Convergence (4.1c): log10 eval MSE vs epoch, mean ± std over seeds.",
    "teacher_curves": "Per-teacher best eval correlation vs epoch (4.1d), one seed, coloured strong (0) to weak.",
}


def parts(scale: str) -> list[Part]:
    """The L-shape sweep (m = 10) and the success-rate sweep (m = 20) over decays and multis."""
    lshape: dict[str, Any]  # config overrides, section -> key -> value
    lshape, success = {"teacher": {"widths": [10]}}, {"teacher": {"widths": [20]}}
    base, multis, lshape_decays, decays = BASE, MULTIS, [0.0, 1.0, 2.0], DECAYS
    if scale == "quick":  # the paper's d, C, m and grids; 8 seeds, 2e4 steps, eval set 2000 (docs/reproducing.md)
        base = merge(BASE, {"seeds": list(range(1, 9)), "data": {"n_eval": 2000}, "train": {"epochs": 20}})
        lshape = {"teacher": {"widths": [10]}, "eval": {"every": 5}}
    elif scale == "tiny":
        base = merge(
            BASE,
            {
                "seeds": [1, 2],
                "input_dim": 8,
                "output_dim": 4,
                "data": {"n_train": 300, "n_eval": 200},
                "train": {"epochs": 6, "steps_per_epoch": 100},
            },
        )
        lshape, success = {"teacher": {"widths": [3]}}, {"teacher": {"widths": [4]}}
        multis, lshape_decays, decays = [1.0, 2.0], [0.0, 1.0], [0.0, 1.0, 2.0]
    return [
        Part("lshape", merge(base, lshape), {"teacher.decay": lshape_decays, "student.multi": multis}),
        Part("success", merge(base, success), {"teacher.decay": decays, "student.multi": multis}),
    ]


def analyze(out: Path, scale: str, figs: Path) -> Analysis:
    """Figures (a)-(d) of 4.1 and its claims, from the stored sweeps."""
    from ...sweep.grid import load_sweep
    from .. import claims as C
    from .. import grid_figures as F
    from . import results as R

    lcfg, scfg = R.part_config(out, "lshape"), R.part_config(out, "success")
    lsh, suc = load_sweep(out / "sweep" / "lshape"), load_sweep(out / "sweep" / "success")
    spe = R.steps_per_epoch(scfg)
    evaluated = sorted(suc["teachers"]["step"].unique())
    early = int(
        min((s for s in evaluated if s >= 5 * spe), default=evaluated[-1])
    )  # "after 5 epochs": the first evaluation from epoch 5 on
    multi = 5.0 if 5.0 in set(suc["teachers"][F.MULTI]) else float(suc["teachers"][F.MULTI].max())
    m = scfg.teacher.widths[0]
    paths = F.save(
        F.lshape(lsh["students"], R.title(lcfg, scale, f"L-shape, m={lcfg.teacher.widths[0]}")), figs, "lshape"
    )
    paths += F.save(
        F.success_rate(suc["teachers"], early, spe, R.title(scfg, scale, f"success rate, m={m}")), figs, "success_rate"
    )
    paths += F.save(
        F.convergence(suc["scalars"], spe, R.title(scfg, scale, f"convergence, m={m}")), figs, "convergence"
    )
    paths += F.save(
        F.teacher_curves(
            suc["teachers"],
            multi,
            spe,
            R.title(scfg, scale, "per-teacher best correlation"),
            threshold=scfg.eval.threshold,
        ),
        figs,
        "teacher_curves",
    )
    found = [
        C.lshape(lsh["students"], corr_threshold=lcfg.eval.threshold),
        C.success_falls_with_index(suc["teachers"]),
        C.success_rises_with_multi(suc["teachers"]),
        C.success_falls_with_decay(suc["teachers"]),
        C.success_lower_early(suc["teachers"], early),
        C.strong_first(suc["teachers"]),
        C.converges_faster_with_multi(suc["scalars"], early),
        C.converges_lower_with_multi(suc["scalars"]),
        C.lemma_identity(R.lemma_from_run(R.first_job(out / "sweep" / "lshape"))),
    ]
    return paths, found


EXPERIMENT = Experiment(NAME, CAPTIONS, parts=parts, analyze=analyze)
