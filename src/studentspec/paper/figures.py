"""Figures of a stored run: the L-shape scatter, teacher-correlation curves and MSE curves.

Drawn and saved in the one style of `paper.style`: the run's multi has its fixed colour (the same
as in the paper's sweep figures), seeds are told apart by marker, thresholds are the run's
`eval.threshold`. Importing this module does not import the trainer (store is imported lazily).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt  # noqa: E402  (after style: the Agg backend)
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .style import (
    FORMATS,
    SINGLE,
    config_title,
    multi_color,
    ordered_cmap,
    ordered_color,
    save,
    seed_marker,
    styled,
    subplots,
)

if TYPE_CHECKING:
    from ..store import Run

__all__ = [
    "config_title",
    "converge_figure",
    "hessian_figure",
    "lshape_figure",
    "mse_figure",
    "plot_run",
    "population_figure",
    "save",
    "teacher_corr_figure",
    "theory_figure",
]

MAX_SEEDS = 4


def _split(df: pd.DataFrame, prefer: str, fallback: str) -> tuple[pd.DataFrame, str]:
    name = prefer if (df["split"] == prefer).any() else fallback
    return df[df["split"] == name], name


def _panels(run: Run) -> tuple[Figure, list[Axes]]:
    fig, axes = subplots(1, len(run.config.teacher.widths))
    return fig, list(axes[0])


def _color(run: Run) -> str:
    return multi_color(run.config.student.multi)


@styled
def lshape_figure(run: Run) -> Figure:
    """Fan-out norm vs best-teacher correlation of every student node at the last step."""
    df, split = _split(run.students, "train", "eval")
    step = int(df["step"].max())
    df = df[(df["step"] == step) & np.isfinite(df["best_corr"]) & np.isfinite(df["fanout_norm"])]
    fig, axes = _panels(run)
    label_seeds = df["seed"].nunique() <= 10
    seeds = list(dict.fromkeys(run.config.seeds))
    for layer, ax in enumerate(axes, start=1):
        rows = df[df["layer"] == layer]
        for seed, s in rows.groupby("seed"):
            marker = seed_marker(seeds.index(seed) if seed in seeds else int(seed))
            ax.scatter(
                s["best_corr"],
                s["fanout_norm"],
                s=10,
                alpha=0.5,
                color=_color(run),
                marker=marker,
                linewidths=0,
                label=f"seed {seed}" if label_seeds else None,
            )
        ax.axvline(
            run.config.eval.threshold, color="grey", ls=":", lw=1, label=f"threshold {run.config.eval.threshold:g}"
        )
        lo = min(0.0, float(rows["best_corr"].min())) if len(rows) else 0.0
        ax.set_xlim(lo - 0.05, 1.1)
        ax.set_ylim(bottom=-0.05)
        ax.set(xlabel="best teacher correlation", ylabel="fan-out norm ||v_k||", title=f"layer {layer}")
        ax.legend()
    fig.suptitle(f"student nodes at step {step} ({split})\n{config_title(run)}")
    return fig


@styled
def teacher_corr_figure(run: Run) -> Figure:
    """Best correlation of each teacher node vs step, coloured by fan-out norm; dead teacher nodes dotted."""
    df, split = _split(run.teachers, "eval", "train")
    seeds = list(dict.fromkeys(df["seed"]))
    df = df[df["seed"].isin(seeds[:MAX_SEEDS])]
    norm = Normalize(float(df["fanout_norm"].min()), float(df["fanout_norm"].max()))
    cmap = ordered_cmap()
    fig, axes = _panels(run)
    thr = run.config.eval.threshold
    for layer, ax in enumerate(axes, start=1):
        for _, t in df[df["layer"] == layer].groupby(["seed", "teacher"]):
            t = t.sort_values("step")
            style = "-" if t["active"].any() else ":"
            ax.plot(t["step"], t["best_corr"], style, color=cmap(norm(t["fanout_norm"].iloc[0])), lw=1, alpha=0.8)
        ax.axhline(thr, color="black", ls="--", lw=1, label=f"threshold {thr:g}")
        ax.set_ylim(min(0.0, float(df["best_corr"].min())) - 0.05, 1.05)
        ax.set(xlabel="step", ylabel="best correlation with a student", title=f"layer {layer}")
        ax.legend(loc="lower right")
    fig.colorbar(ScalarMappable(norm, cmap), ax=axes, label="teacher fan-out norm (strength)")
    shown = f"first {MAX_SEEDS} of {len(seeds)} seeds" if len(seeds) > MAX_SEEDS else f"{len(seeds)} seeds"
    fig.suptitle(f"teacher nodes, best correlation ({split}, {shown})\n{config_title(run)}")
    return fig


SPLIT_LINES = {
    "train": "--",
    "eval": "-",
}  # the run's multi colour for both; eval solid, as in the paper's convergence figure


@styled
def mse_figure(run: Run) -> Figure:
    """log10 MSE vs step, mean +- std over seeds, per split; non-finite values are dropped."""
    df = run.scalars[np.isfinite(run.scalars["mse"]) & (run.scalars["mse"] > 0)]
    df = df.assign(log_mse=np.log10(df["mse"]))
    fig, axes = subplots(1, 1, panel=SINGLE)
    ax = axes[0, 0]
    for split in [s for s in ("train", "eval") if (df["split"] == s).any()]:
        g = df[df["split"] == split].groupby("step")["log_mse"].agg(["mean", "std"]).fillna(0.0)
        ax.plot(g.index, g["mean"], SPLIT_LINES[split], color=_color(run), label=split)
        ax.fill_between(
            g.index,
            g["mean"] - g["std"],
            g["mean"] + g["std"],
            color=_color(run),
            alpha=0.15 if split == "eval" else 0.08,
            linewidth=0,
        )
    ax.set(xlabel="step", ylabel="log10 MSE")
    ax.legend()
    ax.set_title(f"MSE, mean ± std over seeds\n{config_title(run)}")
    return fig


@styled
def theory_figure(run: Run) -> Figure:
    """Theory diagnostics: sqrt(E beta_kk) L-shape per layer, per-sample gradient norms, lowest-layer angles."""
    st = run.students.dropna(subset=["beta_norm"])
    step = int(st["step"].max())
    n = len(run.config.teacher.widths)
    fig, axes = subplots(2, max(n, 2))
    for layer, ax in enumerate(axes[0][:n], start=1):
        rows = st[(st["step"] == step) & (st["layer"] == layer)]
        ax.scatter(rows["best_corr"], rows["beta_norm"], s=10, alpha=0.5, color=_color(run), linewidths=0)
        ax.set(xlabel="best teacher correlation", ylabel="sqrt(E_x beta_kk)", title=f"layer {layer}, step {step}")
    ax = axes[1][0]
    sc = run.scalars.dropna(subset=[c for c in run.scalars.columns if c.startswith("ps_grad_max_")])
    for l in range(1, n + 2):
        g = sc.groupby("step")[[f"ps_grad_max_{l}", f"ps_grad_mean_{l}"]].median()
        ax.semilogy(g.index, g[f"ps_grad_max_{l}"], color=ordered_color(l - 1, n + 1), label=f"layer {l} max")
        ax.semilogy(
            g.index, g[f"ps_grad_mean_{l}"], ls="--", color=ordered_color(l - 1, n + 1), label=f"layer {l} mean"
        )
    ax.set(xlabel="step", ylabel="per-sample gradient norm (median over seeds)", title="gradient at every sample")
    ax.legend()
    ax = axes[1][1]
    te = run.teachers.dropna(subset=["min_angle"])
    m = run.config.teacher.widths[0]
    for (_seed, j), t in te[te["seed"].isin(list(dict.fromkeys(te["seed"]))[:MAX_SEEDS])].groupby(["seed", "teacher"]):
        ax.semilogy(t["step"], t["min_angle"].clip(lower=1e-6), lw=1, alpha=0.8, color=ordered_color(int(j), m))
    ax.set(xlabel="step", ylabel="angle to nearest student (deg)", title="lowest layer: weight alignment")
    for ax in axes[0][n:]:
        ax.set_visible(False)
    for ax in axes[1][2:]:
        ax.set_visible(False)
    fig.suptitle(f"theory diagnostics\n{config_title(run)}")
    return fig


def _converge_panel(run: Run, table: str) -> tuple[pd.DataFrame, dict[str, Any], Figure, Axes]:
    """A table `converge` wrote into the run dir, its converge.json, and one panel to draw them on."""
    from ..store import read_json

    fig, axes = subplots(1, 1, panel=SINGLE)
    return pd.read_parquet(run.path / table), read_json(run.path / "converge.json"), fig, axes[0, 0]


@styled
def converge_figure(run: Run) -> Figure:
    """After `studentspec converge`: each student's angle to its nearest teacher vs its fan-out norm."""
    st, info, fig, ax = _converge_panel(run, "converge_students.parquet")
    for i, (seed, s) in enumerate(st.groupby("seed")):
        ax.scatter(
            np.clip(s["angle_deg"], 1e-6, None),
            s["fanout_norm"],
            s=12,
            alpha=0.6,
            color=_color(run),
            marker=seed_marker(i),
            linewidths=0,
            label=f"seed {seed}",
        )
    ax.set_xscale("log")
    ax.axvline(info["angle_tol_deg"], color="grey", ls=":", lw=1, label="angle tolerance")
    ax.set(xlabel="angle to nearest teacher (deg, lowest layer)", ylabel="fan-out norm ||v_k||")
    ax.legend()
    grads = ", ".join(
        f"{g:.1e}" if isinstance(g := r["grad_max"], (int, float)) else "not finite" for r in info["per_seed"].values()
    )
    ax.set_title(
        f"at the critical point (max per-sample gradient {grads})\nall conclusions hold: {info['all_conclusions_hold']}"
    )
    return fig


@styled
def hessian_figure(run: Run) -> Figure:
    """After `studentspec converge`: each seed's Hessian eigenvalues at its end point, sorted, on a symlog axis."""
    eig, info, fig, ax = _converge_panel(run, "converge_hessian.parquet")
    tols = []
    label: str | None  # a seed's legend entry, on its first line only
    for i, (seed, h) in enumerate(eig.groupby("seed")):
        h = h.sort_values("index")
        summary = info["per_seed"][str(seed)]["hessian"]
        tols.append(summary["zero_tol"])
        lanczos = (h["method"] == "lanczos").all()
        least = ">= " if lanczos else ""  # Lanczos counts only the extremes it computed, one copy of a repeated value
        label = (
            f"seed {seed}: {least}{summary['n_negative']} < 0, "
            f"{least}{summary['n_near_zero']} ~ 0 of {summary['n_params']}"
        )
        half = summary["n_params"] / 2
        for part in [h[h["index"] < half], h[h["index"] >= half]] if lanczos else [h]:
            # lanczos: the two ends of the spectrum, at their positions in it, as markers joined within each end
            ax.plot(
                part["index"],
                part["eigenvalue"],
                color=_color(run),
                alpha=0.75,
                lw=1,
                marker=seed_marker(i),
                ms=3,
                markevery=1 if lanczos else max(1, len(part) // 12),
                label=label,
            )
            label = None
    tol = max((t for t in tols if t), default=1e-12)
    # linear up to the decade above the near-zero band (ticks at 0 and powers of ten), logarithmic outside
    ax.set_yscale("symlog", linthresh=10.0 ** np.ceil(np.log10(tol)))
    ax.axhspan(
        -tol,
        tol,
        color="grey",
        alpha=0.15,
        lw=0,
        label=f"near zero: |lambda| <= {info['hessian']['tol_rel']:g} max|lambda|",
    )
    ax.axhline(0, color="grey", lw=0.6)
    ax.set(xlabel="eigenvalue index (ascending)", ylabel="Hessian eigenvalue")
    ax.legend()
    ax.set_title(f"full-batch Hessian at the end point ({info['loss'].split(': ')[-1]})\n{config_title(run)}")
    return fig


@styled
def population_figure(info: dict[str, Any]) -> Figure:
    """Gradient flow on the population loss: loss vs step per seed, final angle per teacher vs strength."""
    fig, axes = subplots(1, 2)
    a, b = axes[0]
    multi = (info.get("config") or {}).get("student", {}).get("multi")  # population.json holds its config
    color = multi_color(multi) if multi is not None else "black"
    for i, (seed, loss) in enumerate(zip(info["seeds"], info["loss"])):
        loss = np.array(
            loss, dtype=float
        )  # null (a non-finite value, stored as strict JSON) becomes NaN: a gap in the curve
        a.semilogy(
            info["steps"],
            np.clip(loss, 1e-16, None),
            lw=1,
            color=color,
            alpha=0.8,
            marker=seed_marker(i),
            markevery=[len(loss) - 1],
            ms=4,
            label=f"seed {seed}",
        )
    a.set(xlabel="gradient step", ylabel="population loss J", title="gradient flow (infinite data)")
    a.legend()
    for i, (seed, ang, fan) in enumerate(zip(info["seeds"], info["teacher_angle_deg"], info["teacher_fanout_norm"])):
        ang, fan = np.array(ang, dtype=float), np.array(fan, dtype=float)
        b.semilogy(fan, np.clip(ang, 1e-6, None), seed_marker(i), color=color, alpha=0.7, label=f"seed {seed}")
    b.set(
        xlabel="teacher fan-out norm (strength)",
        ylabel="angle to nearest student (deg)",
        title="specialization at the end",
    )
    return fig


def metric_figures(run: Run) -> list[tuple[str, Any]]:
    """(name, draw) of the figures the registered metrics declare (theory/metric.py METRICS), for those this run
    measured: an MLP run whose config switches them on and which stored their tables."""
    from ..theory.metric import METRICS  # here: importing this module does not import the trainer

    if run.summary.get("pipeline", "mlp") != "mlp":
        return []
    return [
        (m.figure.name, m.figure.function())
        for m in METRICS.values()
        if m.figure is not None and m.on(run.config) and (m.table is None or run.has_table(m.table.name))
    ]


def plot_run(run: Run, out_dir: Path) -> list[Path]:
    """Write lshape, teacher_corr, mse (and converge's and the run's metrics' figures, when stored) as PNG and PDF;
    return their paths."""
    from ..store import StoreError, claim_figures

    out_dir = Path(out_dir)
    paths = []
    figures = [("lshape", lshape_figure), ("teacher_corr", teacher_corr_figure), ("mse", mse_figure)]
    if (run.path / "converge.json").is_file():
        figures.append(("converge", converge_figure))
    figures += (
        [("hessian", hessian_figure)] if (run.path / "converge_hessian.parquet").is_file() else []
    )  # converge's Hessian spectrum
    figures += metric_figures(run)  # theory (theory.enabled), order (eval.order: R heatmaps, order_figures.py)
    made: list[tuple[str, Figure]] = []
    open_before = set(plt.get_fignums())
    try:  # every figure is drawn before any is written: a run that cannot be drawn leaves no partial set
        for name, make in figures:
            try:
                made.append((name, make(run)))
            except (KeyError, ValueError, TypeError) as err:  # loadable tables that lack what a figure reads
                raise StoreError(
                    f"{run.path}: cannot draw {name} from its tables ({err.__class__.__name__}: {err})"
                ) from None
    except BaseException:
        for num in set(plt.get_fignums()) - open_before:  # those made, and the one whose drawing failed
            plt.close(num)
        raise
    try:
        claim_figures(out_dir, [f"{name}.{ext}" for name, _ in made for ext in FORMATS])  # all or none may be written
        for name, fig in made:
            paths += save(fig, out_dir, name)
    finally:
        for _, fig in made:  # save() closed the ones it wrote; a refusal or a failed write leaves none open
            plt.close(fig)
    return paths
