"""The paper's figures (docs/model.md 4.1-4.3) drawn from sweep DataFrames, in the one style of `paper.style`.

Every curve of a given `student.multi` has the same colour in every figure (`style.multi_color`),
run figures included, so the figures read together. Inputs are `sweep.load_sweep` frames; nothing
here trains. "Specialized" is the tables' stored `specialized` column (computed with each run's
eval.threshold) unless a caller passes `threshold`.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt  # noqa: E402  (after style: the Agg backend)
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .style import MULTI_COLORS, SMALL, multi_color, ordered_cmap, paper_style, save, styled, subplots

__all__ = [
    "DECAY",
    "MULTI",
    "MULTI_COLORS",
    "convergence",
    "deep_lshape",
    "deep_rho_vs_n",
    "deep_table_vs_n",
    "lshape",
    "multi_color",
    "paper_style",
    "sample_complexity",
    "save",
    "success_rate",
    "teacher_curves",
]

MULTI = "student.multi"
DECAY = "teacher.decay"
THRESHOLD = "eval.threshold"  # a column only where a sweep swept it


def _grid(rows: int, cols: int, w: float = SMALL[0], h: float = SMALL[1], **kw: Any) -> tuple[Figure, np.ndarray]:
    return subplots(rows, cols, panel=(w, h), **kw)


def _threshold(df: pd.DataFrame, threshold: float | None) -> float | None:
    """The threshold given, else the tables' own when they hold a single one (a sweep over eval.threshold stores it)."""
    if threshold is not None:
        return float(threshold)
    if THRESHOLD in df.columns and df[THRESHOLD].nunique() == 1:
        return float(df[THRESHOLD].iloc[0])
    return None


def _specialized(df: pd.DataFrame, threshold: float | None) -> pd.Series:
    """Per row: best_corr above `threshold` when given, else the stored `specialized` column."""
    return df["best_corr"] > threshold if threshold is not None else df["specialized"].astype(bool)


def _final(df: pd.DataFrame) -> pd.DataFrame:
    last = df.groupby("job")["step"].transform("max")
    return df[df["step"] == last]


def _multis(df: pd.DataFrame) -> list[float]:
    return sorted(float(m) for m in df[MULTI].unique())


def _multi_legend(fig: Figure, multis: list[float], extra: list[tuple[str, str]] | None = None) -> None:
    handles = [plt.Line2D([], [], color=multi_color(m), label=f"multi {m:g}") for m in multis]
    handles += [plt.Line2D([], [], color="black", ls=ls, label=label) for ls, label in (extra or [])]
    fig.legend(handles=handles, loc="outside right center")


# ---------------------------------------------------------------- two layers (4.1)


@styled
def lshape(students: pd.DataFrame, title: str) -> Figure:
    """(a) rows = decay p, columns = multi: every student of
    every seed at the end, x = best corr (train), y = ||v_k||."""
    df = _final(students[(students["split"] == "train") & (students["layer"] == 1)])
    decays, multis = sorted(df[DECAY].unique()), _multis(df)
    fig, axes = _grid(len(decays), len(multis), sharex=True, sharey=True)
    top = (
        max(2.5, 1.05 * float(df["fanout_norm"].max())) if len(df) else 2.5
    )  # the paper's axes [0, 1.1] x [-0.1, 2.5] unless data exceed them
    for i, p in enumerate(decays):
        for j, m in enumerate(multis):
            ax = axes[i, j]
            s = df[(df[DECAY] == p) & (df[MULTI] == m)]
            ax.scatter(s["best_corr"], s["fanout_norm"], s=5, alpha=0.45, color=multi_color(m), linewidths=0)
            ax.set_xlim(0, 1.1)
            ax.set_ylim(-0.1, top)
            ax.set_title(f"p = {p:g}, multi = {m:g}")
            if i == len(decays) - 1:
                ax.set_xlabel("best teacher correlation")
            if j == 0:
                ax.set_ylabel(r"fan-out norm $\|v_k\|$")
    fig.suptitle(title)
    return fig


@styled
def success_rate(
    teachers: pd.DataFrame, early_step: int, steps_per_epoch: int, title: str, *, threshold: float | None = None
) -> Figure:
    """(b) panels = decay p > 0: fraction of seeds specializing each teacher node; dotted early, solid at the end.

    Specialized = the stored `specialized` column (each run's eval.threshold), or best corr > `threshold` when given.
    """
    df = teachers[(teachers["split"] == "eval") & (teachers["layer"] == 1) & (teachers[DECAY] > 0)]
    thr = _threshold(df, threshold)
    df = df.assign(specialized=_specialized(df, threshold))
    decays, multis = sorted(df[DECAY].unique()), _multis(df)
    fig, axes = _grid(1, len(decays), sharey=True)
    end = _final(df)
    early = df[df["step"] == early_step]
    for ax, p in zip(axes[0], decays):
        for m in multis:
            for frame, ls in ((early, ":"), (end, "-")):
                g = frame[(frame[DECAY] == p) & (frame[MULTI] == m)].groupby("teacher")["specialized"].mean()
                ax.plot(g.index, g.values, ls, color=multi_color(m), marker="o" if ls == "-" else None, ms=2.5)
        ax.set(title=f"p = {p:g}", ylim=(-0.03, 1.03))
    axes[0, 0].set_ylabel(f"success rate (best corr > {thr:g})" if thr is not None else "success rate (specialized)")
    fig.supxlabel("teacher node index (0 = strongest)")
    _multi_legend(fig, multis, [(":", f"epoch {early_step / steps_per_epoch:g}"), ("-", "end")])
    fig.suptitle(title)
    return fig


@styled
def convergence(scalars: pd.DataFrame, steps_per_epoch: int, title: str) -> Figure:
    """(c) panels = decay p: log10 eval MSE vs epoch, mean ± std over seeds, one curve per multi."""
    df = scalars[(scalars["split"] == "eval") & (scalars["mse"] > 0)]
    df = df.assign(log_mse=np.log10(df["mse"]), epoch=df["step"] / steps_per_epoch)
    decays, multis = sorted(df[DECAY].unique()), _multis(df)
    fig, axes = _grid(1, len(decays), sharey=True)
    for ax, p in zip(axes[0], decays):
        for m in multis:
            g = df[(df[DECAY] == p) & (df[MULTI] == m)].groupby("epoch")["log_mse"].agg(["mean", "std"]).fillna(0.0)
            ax.plot(g.index, g["mean"], color=multi_color(m))
            ax.fill_between(
                g.index, g["mean"] - g["std"], g["mean"] + g["std"], color=multi_color(m), alpha=0.15, linewidth=0
            )
        ax.set(title=f"p = {p:g}")
    axes[0, 0].set_ylabel(r"$\log_{10}$ eval MSE (mean ± std)")
    fig.supxlabel("epoch")
    _multi_legend(fig, multis)
    fig.suptitle(title)
    return fig


@styled
def teacher_curves(
    teachers: pd.DataFrame, multi: float, steps_per_epoch: int, title: str, *, threshold: float | None = None
) -> Figure:
    """(d) one seed, one multi, panels = decay p: each teacher node's best eval correlation vs epoch, strong → weak.

    A dot marks the first evaluation at which a node is specialized (stored column, or best corr > `threshold`
    when given); the threshold line is drawn when the threshold is known (given, or an eval.threshold column).
    """
    df = teachers[(teachers["split"] == "eval") & (teachers["layer"] == 1) & (teachers[MULTI] == multi)]
    seed = int(df["seed"].min())
    df = df[df["seed"] == seed]
    thr = _threshold(df, threshold)
    df = df.assign(specialized=_specialized(df, threshold))
    decays = sorted(df[DECAY].unique())
    fig, axes = _grid(1, len(decays), sharey=True)
    cmap = ordered_cmap()
    m = int(df["teacher"].max()) + 1
    for ax, p in zip(axes[0], decays):
        for j, t in df[df[DECAY] == p].groupby("teacher"):
            t = t.sort_values("step")
            color = cmap(j / max(1, m - 1))
            ax.plot(t["step"] / steps_per_epoch, t["best_corr"], color=color, lw=1)
            first = t[t["specialized"]].head(1)
            if len(first):
                ax.scatter(
                    first["step"] / steps_per_epoch, first["best_corr"], s=10, color=color, zorder=3, linewidths=0
                )
        if thr is not None:
            ax.axhline(thr, color="grey", ls="--", lw=0.8, label=f"threshold {thr:g}")
        ax.set(title=f"p = {p:g}", ylim=(min(0.0, float(df["best_corr"].min())) - 0.03, 1.03))
    axes[0, 0].set_ylabel("best eval correlation")
    fig.supxlabel("epoch")
    sm = ScalarMappable(Normalize(0, m - 1), cmap)
    fig.colorbar(sm, ax=axes[0].tolist(), label="teacher node index (0 = strongest)")
    fig.suptitle(f"{title} (multi {multi:g}, seed {seed})")
    return fig


# ---------------------------------------------------------------- sample complexity (4.2)


@styled
def sample_complexity(scalars: pd.DataFrame, teachers: pd.DataFrame, title: str) -> Figure:
    """Per N: min eval MSE, min train MSE (over epochs), mean final
    best eval correlation; solid teacher-aware, dashed Gaussian."""
    mins = (
        scalars.groupby(["data.kind", "data.n_train", MULTI, "seed", "split"])["mse"]
        .min()
        .unstack("split")
        .reset_index()
    )
    corr = _final(teachers[(teachers["split"] == "eval") & (teachers["layer"] == 1)])
    corr = corr.groupby(["data.kind", "data.n_train", MULTI, "seed"])["best_corr"].mean().rename("corr").reset_index()
    data = mins.merge(corr, on=["data.kind", "data.n_train", MULTI, "seed"])
    fig, axes = _grid(1, 3, w=3.0, h=2.5)
    styles = {"teacher_aware": "-", "gaussian": "--"}
    for ax, col, label in zip(
        axes[0], ["eval", "train", "corr"], ["min eval MSE", "min train MSE", "best eval corr. (final, mean)"]
    ):
        for (kind, m), g in data.groupby(["data.kind", MULTI]):
            s = g.groupby("data.n_train")[col].agg(["mean", "std"]).fillna(0.0)
            ax.errorbar(
                s.index,
                s["mean"],
                yerr=s["std"],
                ls=styles.get(kind, "-."),
                color=multi_color(m),
                capsize=1.5,
                elinewidth=0.6,
                marker="o",
                ms=2.5,
            )
        ax.set_xscale("log")
        if col != "corr":
            ax.set_yscale("log")
        ax.set(xlabel="training set size N", ylabel=label)
    _multi_legend(fig, _multis(data), [("-", "teacher-aware"), ("--", "Gaussian")])
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------- deep (4.3)


@styled
def deep_lshape(students: pd.DataFrame, steps_per_epoch: int, title: str, columns: int = 5) -> Figure:
    """Rows = hidden layers (top layer first), columns = evenly
    spaced evaluations: x = best corr, y = sqrt(E beta_kk)."""
    df = students.dropna(subset=["beta_norm"])
    steps = sorted(df["step"].unique())
    picks = [steps[round(i)] for i in np.linspace(0, len(steps) - 1, min(columns, len(steps)))]
    layers = sorted(df["layer"].unique(), reverse=True)
    fig, axes = _grid(len(layers), len(picks), w=2.0, h=1.7, sharex=True)
    multis = _multis(df) if MULTI in df.columns else [float("nan")]
    for i, layer in enumerate(layers):
        rows = df[df["layer"] == layer]
        top = 1.05 * float(rows["beta_norm"].max()) if len(rows) else 1.0
        for j, step in enumerate(picks):
            ax = axes[i, j]
            s = rows[rows["step"] == step]
            color = multi_color(multis[0]) if not math.isnan(multis[0]) else "black"
            ax.scatter(s["best_corr"], s["beta_norm"], s=4, alpha=0.45, color=color, linewidths=0)
            ax.set_xlim(-0.1, 1.1)
            ax.set_ylim(-0.04 * top, top)
            if i == 0:
                ax.set_title(f"epoch {step / steps_per_epoch:.0f}")
            if j == 0:
                ax.set_ylabel(f"layer {layer}\n" + r"$\sqrt{E_x[\beta_{kk}]}$")
            if i == len(layers) - 1:
                ax.set_xlabel("best teacher correlation")
    fig.suptitle(title)
    return fig


@styled
def deep_rho_vs_n(scalars: pd.DataFrame, title: str) -> Figure:
    """Rows = loss (MSE, CE), columns = layers + eval MSE:
    final rho_mean_l vs training set size, one curve per multi."""
    df = _final(scalars[scalars["split"] == "eval"])
    layers = sorted(int(c.rsplit("_", 1)[1]) for c in df.columns if c.startswith("rho_mean_"))
    losses = sorted(df["train.loss"].unique(), key=lambda s: s != "mse") if "train.loss" in df.columns else ["mse"]
    fig, axes = _grid(len(losses), len(layers) + 1, w=2.1, h=1.9)
    for i, loss in enumerate(losses):
        rows = df[df["train.loss"] == loss] if "train.loss" in df.columns else df
        for m, g in rows.groupby(MULTI):
            for j, col in enumerate([*(f"rho_mean_{l}" for l in layers), "mse"]):
                s = g.groupby("data.n_train")[col].agg(["mean", "std"]).fillna(0.0)
                axes[i, j].errorbar(
                    s.index,
                    s["mean"],
                    yerr=s["std"],
                    color=multi_color(m),
                    marker="o",
                    ms=2.5,
                    capsize=1.5,
                    elinewidth=0.6,
                )
        for j, l in enumerate(layers):
            axes[i, j].set(xscale="log", ylim=(0.3, 1.02), title=f"{loss.upper()}: layer {l}")
            axes[i, j].set_ylabel(r"$\rho_{mean}$" if j == 0 else "")
        axes[i, -1].set(xscale="log", yscale="log", title=f"{loss.upper()}: final eval MSE")
    for ax in axes[-1]:
        ax.set_xlabel("training set size N")
    _multi_legend(fig, _multis(df))
    fig.suptitle(title)
    return fig


@styled
def deep_table_vs_n(tables: dict[str, pd.DataFrame], reference: pd.DataFrame, title: str) -> Figure:
    """Columns = layers + eval MSE: seed-mean final rho_mean_l vs training set size, one curve per budget
    (`paper.claims.deep_table` tables by label), the reference table in black."""
    cols = [c for c in next(iter(tables.values())).columns if c.startswith("rho_mean_")] + ["mse"]
    fig, axes = _grid(1, len(cols), w=2.1, h=1.9)
    styles = [("tab:blue", "o"), ("tab:orange", "s"), ("tab:green", "^")]
    for (label, table), (color, marker) in zip(tables.items(), styles):
        for ax, col in zip(axes[0], cols):
            ax.plot(table.index, table[col], color=color, marker=marker, ms=2.5, label=label)
    for ax, col in zip(axes[0], cols):
        if col in reference.columns:
            ax.plot(reference.index, reference[col], color="black", ls="--", marker="x", ms=3, label="reference")
        if col == "mse":
            ax.set(xscale="log", yscale="log", title="final eval MSE")
        else:
            ax.set(xscale="log", ylim=(0.3, 1.02), title=f"layer {col.rsplit('_', 1)[1]}")
        ax.set_xlabel("training set size N")
    axes[0, 0].set_ylabel(r"$\rho_{mean}$")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, -0.08))
    fig.suptitle(title)
    return fig
