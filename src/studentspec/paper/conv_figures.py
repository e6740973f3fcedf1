"""Figures of conv-student runs over several multis (docs/model.md 4.4's report), in the one style of `paper.style`.

Layers are ordered curves (`style.ordered_color`), channels are coloured by strength on the same
colour map, and the threshold line is each run's eval.threshold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .style import PANEL, ordered_cmap, ordered_color, styled, subplots

if TYPE_CHECKING:
    from ..store import Run


def _accuracy_title(run: Run, multi: float) -> str:
    sc = run.scalars
    last = sc[sc["step"] == sc["step"].max()]["accuracy"]
    teacher = run.summary.get("teacher", {}).get("accuracy")
    extra = f", teacher {teacher:.1%}" if teacher is not None else ""
    return f"multi {multi:g}: student accuracy {last.mean():.1%} ± {last.std(ddof=0):.1%}{extra}"


@styled
def layer_corr_figure(runs: dict[float, Run]) -> Figure:
    """Per layer, mean over active teacher channels of the best student
    correlation vs epoch, mean ± std over seeds; one panel per multi."""
    fig, axes = subplots(1, len(runs), sharey=True)
    for ax, (multi, run) in zip(axes[0], sorted(runs.items())):
        sc = run.scalars
        layers = sorted(int(c.rsplit("_", 1)[1]) for c in sc.columns if c.startswith("rho_mean_"))
        for i, l in enumerate(layers):
            g = sc.groupby("epoch")[f"rho_mean_{l}"].agg(["mean", "std"]).fillna(0.0)
            color = ordered_color(i, len(layers))
            ax.plot(g.index, g["mean"], marker="o", ms=3, color=color, label=f"layer {l}")
            ax.fill_between(g.index, g["mean"] - g["std"], g["mean"] + g["std"], color=color, alpha=0.2, linewidth=0)
        ax.set(xlabel="epoch", ylim=(0, 1.02))
        ax.set_title(_accuracy_title(run, multi))
        ax.legend(loc="lower right")
    axes[0, 0].set_ylabel("mean best correlation (active teacher channels)")  # shared y: the first panel only
    n_seeds = len(next(iter(runs.values())).config.seeds) if runs else 0
    fig.suptitle(f"student specialization per layer (eval images, mean ± std over {n_seeds} seeds)")
    return fig


@styled
def channel_corr_figure(runs: dict[float, Run]) -> Figure:
    """Best correlation of every active teacher channel vs epoch (mean
    over seeds), colored by its fan-out norm; rows = multi, columns = layer.

    The dashed line is the run's eval.threshold (what its `specialized` column and n_specialized counts use).
    """
    items = sorted(runs.items())
    n_layers = max(int(r.teachers["layer"].max()) for _, r in items) if items else 1
    fig, axes = subplots(max(1, len(items)), n_layers, panel=(PANEL[0], PANEL[1] * 0.9), sharey=True)
    fan = np.concatenate([r.teachers["fanout_norm"].to_numpy() for _, r in items]) if items else np.ones(1)
    norm = Normalize(float(fan.min()), float(fan.max()))
    cmap = ordered_cmap()
    for i, (row, (multi, run)) in enumerate(zip(axes, items)):
        te = run.teachers
        thr = run.config.eval.threshold
        for l, ax in enumerate(row, start=1):
            g = (
                te[te["layer"] == l]
                .groupby(["teacher", "epoch"])
                .agg(best=("best_corr", "mean"), fan=("fanout_norm", "first"))
                .reset_index()
            )
            for _, c in g.groupby("teacher"):
                ax.plot(c["epoch"], c["best"], lw=1, alpha=0.8, color=cmap(norm(c["fan"].iloc[0])))
            ax.axhline(thr, color="black", ls="--", lw=0.8, label=f"threshold {thr:g}")
            ax.set(ylim=(0, 1.02), title=f"multi {multi:g}, layer {l} ({g['teacher'].nunique()} channels)")
            if l == 1:
                ax.set_ylabel("best correlation")
            if i == len(items) - 1:  # the bottom row
                ax.set_xlabel("epoch")
    fig.colorbar(ScalarMappable(norm, cmap), ax=axes, label="teacher fan-out norm")
    fig.suptitle("per teacher channel: best student correlation (mean over seeds)")
    return fig
