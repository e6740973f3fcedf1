"""The order-parameter figure of a run with order.parquet (eval.order): R, the student-teacher cosines, as heatmaps.

One seed (the run's first), the lowest hidden layer (the only one with R, see mlp/order.py), at the
first, a middle and the last evaluated step. Teachers are columns in index order (0 = strongest in
the two-layer recipe); students are rows, grouped by their best teacher (argmax_j R cosine at the
last step shown), within a group by that cosine, highest first, so every panel has the same rows and
a specialized student reads as a bright cell on a block diagonal. Drawn in the one style of
`paper.style`; importing this module does not import the trainer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .style import PANEL, config_title, styled, subplots

if TYPE_CHECKING:
    from ..store import Run

__all__ = ["order_figure", "r_matrix", "shown_steps", "student_order"]

# a cosine is signed: a diverging map centred on 0 (the style's ordered map is for ordered curves)
COSINE_CMAP = "RdBu_r"


def r_matrix(order: pd.DataFrame, seed: int, step: int, layer: int = 1) -> np.ndarray:
    """R cosines of one seed, step and layer as a [student, teacher] array (from the long order table)."""
    r = order[(order["kind"] == "R") & (order["seed"] == seed) & (order["step"] == step) & (order["layer"] == layer)]
    if r.empty:
        raise ValueError(f"order table has no R rows for seed {seed}, step {step}, layer {layer}")
    out = np.full((int(r["i"].max()) + 1, int(r["j"].max()) + 1), np.nan)
    out[r["i"].to_numpy(), r["j"].to_numpy()] = r["cosine"].to_numpy()
    return out


def student_order(cos: np.ndarray) -> np.ndarray:
    """Row order of a [student, teacher] cosine array: by best teacher (ascending), then by that cosine (descending)."""
    filled = np.where(np.isfinite(cos), cos, -np.inf)
    best = filled.argmax(axis=1)
    value = filled[np.arange(len(cos)), best]
    return np.lexsort((-value, best))  # the last key sorts first


def shown_steps(steps: list[int]) -> list[int]:
    """The first, a middle and the last of the evaluated steps (fewer when fewer are stored)."""
    steps = sorted(set(steps))
    return sorted({steps[0], steps[len(steps) // 2], steps[-1]})


@styled
def order_figure(run: Run) -> Figure:
    """R (student-teacher cosine of augmented weights) heatmaps of the run's first seed at three steps, layer 1."""
    order = run.table("order")
    r = order[order["kind"] == "R"]
    if r.empty:
        raise ValueError("order table has no R rows")
    seeds = [s for s in run.config.seeds if (r["seed"] == s).any()] or sorted(set(r["seed"]))
    seed = int(seeds[0])
    steps = shown_steps([int(s) for s in r.loc[r["seed"] == seed, "step"]])
    mats = [r_matrix(r, seed, s) for s in steps]
    rows = student_order(mats[-1])
    fig, axes = subplots(1, len(steps), panel=PANEL)
    norm = Normalize(-1.0, 1.0)
    n, m = mats[-1].shape
    for ax, step, mat in zip(axes[0], steps, mats):
        ax.imshow(mat[rows], cmap=COSINE_CMAP, norm=norm, aspect="auto", interpolation="nearest")
        ax.grid(False)
        ax.set(xlabel="teacher node j", title=f"step {step}")
        if m <= 20:
            ax.set_xticks(range(m))
        if n <= 30:  # label rows with the student's index (rows are reordered)
            ax.set_yticks(range(n), [str(k) for k in rows], fontsize=6)
        else:
            ax.set_yticks([])
    axes[0][0].set_ylabel(f"student node (by best teacher at step {steps[-1]})")
    fig.colorbar(ScalarMappable(norm, COSINE_CMAP), ax=axes[0].tolist(), label="cosine of augmented weights [w; b]")
    fig.suptitle(f"R: student-teacher weight cosines, layer 1, seed {seed} ({n} students)\n{config_title(run)}")
    return fig
