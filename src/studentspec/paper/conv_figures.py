"""Figures of conv-student runs over several multis (science.md 4.4's report)."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..store import Run

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _accuracy_title(run: Run, multi: float) -> str:
    sc = run.scalars
    last = sc[sc["step"] == sc["step"].max()]["accuracy"]
    teacher = run.summary.get("teacher", {}).get("accuracy")
    extra = f", teacher {teacher:.1%}" if teacher is not None else ""
    return f"multi {multi:g}: student accuracy {last.mean():.1%} ± {last.std(ddof=0):.1%}{extra}"


def layer_corr_figure(runs: dict[float, Run]) -> Figure:
    """Per layer, mean over active teacher channels of the best student correlation vs epoch, mean ± std over seeds; one panel per multi."""
    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs) + 0.6, 4.0), squeeze=False, layout="constrained", sharey=True)
    for ax, (multi, run) in zip(axes[0], sorted(runs.items())):
        sc = run.scalars
        layers = sorted(int(c.rsplit("_", 1)[1]) for c in sc.columns if c.startswith("rho_mean_"))
        for l in layers:
            g = sc.groupby("epoch")[f"rho_mean_{l}"].agg(["mean", "std"]).fillna(0.0)
            (line,) = ax.plot(g.index, g["mean"], marker="o", ms=3, label=f"layer {l}")
            ax.fill_between(g.index, g["mean"] - g["std"], g["mean"] + g["std"], color=line.get_color(), alpha=0.2)
        ax.set(xlabel="epoch", ylabel="mean best correlation (active teacher channels)", ylim=(0, 1.02))
        ax.set_title(_accuracy_title(run, multi), fontsize="medium")
        ax.legend(fontsize="x-small", loc="lower right")
    n_seeds = len(next(iter(runs.values())).config.seeds) if runs else 0
    fig.suptitle(f"student specialization per layer (eval images, mean ± std over {n_seeds} seeds)", fontsize="medium")
    return fig


def channel_corr_figure(runs: dict[float, Run]) -> Figure:
    """Best correlation of every active teacher channel vs epoch (mean over seeds), colored by its fan-out norm; rows = multi, columns = layer."""
    items = sorted(runs.items())
    n_layers = max(int(r.teachers["layer"].max()) for _, r in items) if items else 1
    fig, axes = plt.subplots(len(items), n_layers, figsize=(3.6 * n_layers + 1.0, 2.9 * len(items)), squeeze=False, layout="constrained",
                             sharey=True)
    fan = np.concatenate([r.teachers["fanout_norm"].to_numpy() for _, r in items]) if items else np.ones(1)
    norm = Normalize(float(fan.min()), float(fan.max()))
    cmap = plt.get_cmap("viridis")
    for row, (multi, run) in zip(axes, items):
        te = run.teachers
        for l, ax in enumerate(row, start=1):
            g = te[te["layer"] == l].groupby(["teacher", "epoch"]).agg(best=("best_corr", "mean"), fan=("fanout_norm", "first")).reset_index()
            for _, c in g.groupby("teacher"):
                ax.plot(c["epoch"], c["best"], lw=1, alpha=0.8, color=cmap(norm(c["fan"].iloc[0])))
            ax.set(ylim=(0, 1.02), title=f"multi {multi:g}, layer {l} ({g['teacher'].nunique()} channels)")
            if l == 1:
                ax.set_ylabel("best correlation")
            if row is axes[-1]:
                ax.set_xlabel("epoch")
    fig.colorbar(ScalarMappable(norm, cmap), ax=axes, label="teacher fan-out norm")
    fig.suptitle("per teacher channel: best student correlation (mean over seeds)", fontsize="medium")
    return fig
