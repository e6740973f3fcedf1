"""The paper's figures (science.md 4.1-4.3) drawn from sweep DataFrames, in one consistent style.

Every curve of a given `student.multi` has the same colour in every figure (MULTI_COLORS), so
the figures read together. Inputs are `sweep.load_sweep` frames; nothing here trains.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MULTI = "student.multi"
DECAY = "teacher.decay"
MULTI_COLORS = {1.0: "#1f77b4", 2.0: "#ff7f0e", 3.0: "#8c564b", 5.0: "#2ca02c", 10.0: "#d62728"}
STYLE = {
    "font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 8.5, "legend.fontsize": 7, "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
    "grid.linewidth": 0.5, "legend.frameon": False, "lines.linewidth": 1.4, "savefig.bbox": "tight", "font.family": "DejaVu Serif",
}
DPI = 150


def multi_color(multi: float) -> str:
    """The colour of one multi, the same in every figure (unknown multis get a fixed fallback by value)."""
    fallback = ["#9467bd", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    return MULTI_COLORS.get(float(multi), fallback[int(float(multi) * 7) % len(fallback)])


@contextmanager
def paper_style() -> Iterator[None]:
    """Matplotlib settings for print-like figures (small serif type, light grid, no top/right spines)."""
    with matplotlib.rc_context(STYLE):
        yield


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write a figure as PNG and PDF and close it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{ext}" for ext in ("png", "pdf")]
    try:
        for path in paths:
            fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return paths


def _grid(rows: int, cols: int, w: float = 2.3, h: float = 2.0, **kw: Any) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols + 0.6, h * rows + 0.5), squeeze=False, layout="constrained", **kw)
    return fig, axes


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

def lshape(students: pd.DataFrame, title: str) -> Figure:
    """(a) rows = decay p, columns = multi: every student of every seed at the end, x = best corr (train), y = ||v_k||."""
    df = _final(students[(students["split"] == "train") & (students["layer"] == 1)])
    decays, multis = sorted(df[DECAY].unique()), _multis(df)
    fig, axes = _grid(len(decays), len(multis), sharex=True, sharey=True)
    top = max(2.5, 1.05 * float(df["fanout_norm"].max())) if len(df) else 2.5  # the paper's axes [0, 1.1] x [-0.1, 2.5] unless data exceed them
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


def success_rate(teachers: pd.DataFrame, early_step: int, steps_per_epoch: int, title: str) -> Figure:
    """(b) panels = decay p > 0: fraction of seeds specializing each teacher node; dotted early, solid at the end."""
    df = teachers[(teachers["split"] == "eval") & (teachers["layer"] == 1) & (teachers[DECAY] > 0)]
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
    axes[0, 0].set_ylabel("success rate (best corr > 0.95)")
    fig.supxlabel("teacher node index (0 = strongest)", fontsize=8.5)
    _multi_legend(fig, multis, [(":", f"epoch {early_step / steps_per_epoch:g}"), ("-", "end")])
    fig.suptitle(title)
    return fig


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
            ax.fill_between(g.index, g["mean"] - g["std"], g["mean"] + g["std"], color=multi_color(m), alpha=0.15, linewidth=0)
        ax.set(title=f"p = {p:g}")
    axes[0, 0].set_ylabel(r"$\log_{10}$ eval MSE (mean ± std)")
    fig.supxlabel("epoch", fontsize=8.5)
    _multi_legend(fig, multis)
    fig.suptitle(title)
    return fig


def teacher_curves(teachers: pd.DataFrame, multi: float, steps_per_epoch: int, title: str) -> Figure:
    """(d) one seed, one multi, panels = decay p: each teacher node's best eval correlation vs epoch, strong → weak."""
    df = teachers[(teachers["split"] == "eval") & (teachers["layer"] == 1) & (teachers[MULTI] == multi)]
    seed = int(df["seed"].min())
    df = df[df["seed"] == seed]
    decays = sorted(df[DECAY].unique())
    fig, axes = _grid(1, len(decays), sharey=True)
    cmap = plt.get_cmap("viridis")
    m = int(df["teacher"].max()) + 1
    for ax, p in zip(axes[0], decays):
        for j, t in df[df[DECAY] == p].groupby("teacher"):
            t = t.sort_values("step")
            ax.plot(t["step"] / steps_per_epoch, t["best_corr"], color=cmap(j / max(1, m - 1)), lw=1)
        ax.axhline(0.95, color="grey", ls="--", lw=0.8)
        ax.set(title=f"p = {p:g}", ylim=(min(0.0, float(df["best_corr"].min())) - 0.03, 1.03))
    axes[0, 0].set_ylabel("best eval correlation")
    fig.supxlabel("epoch", fontsize=8.5)
    sm = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, m - 1), cmap)
    fig.colorbar(sm, ax=axes[0].tolist(), label="teacher node index (0 = strongest)")
    fig.suptitle(f"{title} (multi {multi:g}, seed {seed})")
    return fig


# ---------------------------------------------------------------- sample complexity (4.2)

def sample_complexity(scalars: pd.DataFrame, teachers: pd.DataFrame, title: str) -> Figure:
    """Per N: min eval MSE, min train MSE (over epochs), mean final best eval correlation; solid teacher-aware, dashed Gaussian."""
    mins = scalars.groupby(["data.kind", "data.n_train", MULTI, "seed", "split"])["mse"].min().unstack("split").reset_index()
    corr = _final(teachers[(teachers["split"] == "eval") & (teachers["layer"] == 1)])
    corr = corr.groupby(["data.kind", "data.n_train", MULTI, "seed"])["best_corr"].mean().rename("corr").reset_index()
    data = mins.merge(corr, on=["data.kind", "data.n_train", MULTI, "seed"])
    fig, axes = _grid(1, 3, w=3.0, h=2.5)
    styles = {"teacher_aware": "-", "gaussian": "--"}
    for ax, col, label in zip(axes[0], ["eval", "train", "corr"], ["min eval MSE", "min train MSE", "best eval corr. (final, mean)"]):
        for (kind, m), g in data.groupby(["data.kind", MULTI]):
            s = g.groupby("data.n_train")[col].agg(["mean", "std"]).fillna(0.0)
            ax.errorbar(s.index, s["mean"], yerr=s["std"], ls=styles.get(kind, "-."), color=multi_color(m), capsize=1.5, elinewidth=0.6,
                        marker="o", ms=2.5)
        ax.set_xscale("log")
        if col != "corr":
            ax.set_yscale("log")
        ax.set(xlabel="training set size N", ylabel=label)
    _multi_legend(fig, _multis(data), [("-", "teacher-aware"), ("--", "Gaussian")])
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------- deep (4.3)

def deep_lshape(students: pd.DataFrame, steps_per_epoch: int, title: str, columns: int = 5) -> Figure:
    """Rows = hidden layers (top layer first), columns = evenly spaced evaluations: x = best corr, y = sqrt(E beta_kk)."""
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
            color = multi_color(multis[0]) if not math.isnan(multis[0]) else "C0"
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


def deep_rho_vs_n(scalars: pd.DataFrame, title: str) -> Figure:
    """Rows = loss (MSE, CE), columns = layers + eval MSE: final rho_mean_l vs training set size, one curve per multi."""
    df = _final(scalars[scalars["split"] == "eval"])
    layers = sorted(int(c.rsplit("_", 1)[1]) for c in df.columns if c.startswith("rho_mean_"))
    losses = sorted(df["train.loss"].unique(), key=lambda s: s != "mse") if "train.loss" in df.columns else ["mse"]
    fig, axes = _grid(len(losses), len(layers) + 1, w=2.1, h=1.9)
    for i, loss in enumerate(losses):
        rows = df[df["train.loss"] == loss] if "train.loss" in df.columns else df
        for m, g in rows.groupby(MULTI):
            for j, col in enumerate([*(f"rho_mean_{l}" for l in layers), "mse"]):
                s = g.groupby("data.n_train")[col].agg(["mean", "std"]).fillna(0.0)
                axes[i, j].errorbar(s.index, s["mean"], yerr=s["std"], color=multi_color(m), marker="o", ms=2.5, capsize=1.5, elinewidth=0.6)
        for j, l in enumerate(layers):
            axes[i, j].set(xscale="log", ylim=(0.3, 1.02), title=f"{loss.upper()}: layer {l}")
            axes[i, j].set_ylabel(r"$\rho_{mean}$" if j == 0 else "")
        axes[i, -1].set(xscale="log", yscale="log", title=f"{loss.upper()}: final eval MSE")
    for ax in axes[-1]:
        ax.set_xlabel("training set size N")
    _multi_legend(fig, _multis(df))
    fig.suptitle(title)
    return fig
