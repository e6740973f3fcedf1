"""Figures of an ODE dir (`studentspec ode`) and of a run with the ODE's curves laid over it (`plot RUN --ode DIR`).

An ODE dir: the population loss vs t (log-log, one line per seed), the best student's cosine per teacher (R_km /
sqrt(Q_kk T_mm), maximized over students k) and the mean student-student cosine (Q's off-diagonal: near 1 on the
symmetric plateau, where every student points at the teachers' average) vs t. The overlay: the run's stored loss
(eval split) and its order-parameter cosines (order.parquet, layer 1, eval.order: true) as mean +- sd over seeds (of
log10 for a loss, which spans decades: a geometric mean and band) at
t = step / input_dim, the ODE's as lines (mean +- sd over the same seeds). Per-teacher quantities are the best
student's, which does not depend on how students are numbered: the mean over seeds is meaningful. Drawn in the one
style of `paper.style`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .style import FORMATS, PANEL, multi_color, ordered_color, save, styled, subplots

if TYPE_CHECKING:
    from ..store import Run

__all__ = [
    "best_cosines",
    "convergence_law",
    "mean_sd",
    "ode_figure",
    "ode_vs_simulation",
    "overlay_figure",
    "plateau",
    "plot_ode",
    "save",
    "specialization_note",
    "student_cosines",
]

FLOOR = 1e-16  # a loss plotted on a log axis: exact zeros (a linear ODE at its fixed point) shown at the floor


def mean_sd(df: pd.DataFrame, x: str, y: str, by: list[str] | None = None, *, log: bool = False) -> pd.DataFrame:
    """Per `x` (and group of `by`), over seeds: `mean` and the band `lo`, `hi` = mean -+ sd (0 for one seed); with
    `log`, of log10 y (a loss spanning decades: the geometric mean, times or divided by the geometric sd), values
    below FLOOR counted at FLOOR."""
    keys = [*(by or []), x]
    values = np.log10(df[y].clip(lower=FLOOR)) if log else df[y]
    g = df.assign(_v=values).groupby(keys)["_v"].agg(["mean", "std"]).fillna(0.0).reset_index()
    lo, hi = g["mean"] - g["std"], g["mean"] + g["std"]
    if log:
        return g.assign(mean=10 ** g["mean"], lo=10**lo, hi=10**hi).drop(columns="std")
    return g.assign(lo=lo, hi=hi).drop(columns="std")


def best_cosines(cos: pd.DataFrame, time: str) -> pd.DataFrame:
    """Per (seed, time, teacher j): the largest cosine over students i."""
    return cos.groupby(["seed", time, "j"])["cosine"].max().reset_index()


def student_cosines(order: pd.DataFrame, time: str, kind: str = "Q", value: str = "value") -> pd.DataFrame:
    """Per (seed, time): the mean cosine of distinct students (i < j) from Q rows; empty when K = 1."""
    q = order[order["kind"] == kind]
    diag = q[q["i"] == q["j"]][["seed", time, "i", value]].rename(columns={value: "qi"})
    off = q[q["i"] < q["j"]]
    if off.empty:
        return pd.DataFrame(columns=["seed", time, "cosine"])
    off = off.merge(diag, on=["seed", time, "i"]).merge(
        diag.rename(columns={"i": "j", "qi": "qj"}), on=["seed", time, "j"]
    )
    norm = np.sqrt(off["qi"].clip(lower=0) * off["qj"].clip(lower=0))
    off = off.assign(cosine=np.where(norm > 0, off[value] / norm.where(norm > 0, 1.0), 0.0))
    return off.groupby(["seed", time])["cosine"].mean().reset_index()


def _band(ax: Axes, g: pd.DataFrame, x: str, color: Any, label: str, *, line: bool) -> None:
    """A mean line (or points) with its band lo..hi (mean_sd)."""
    if line:
        ax.plot(g[x], g["mean"], "-", color=color, label=label)
        ax.fill_between(g[x], g["lo"], g["hi"], color=color, alpha=0.15, linewidth=0)
    else:
        ax.errorbar(
            g[x],
            g["mean"],
            yerr=[g["mean"] - g["lo"], g["hi"] - g["mean"]],
            fmt="o",
            ms=2.5,
            color=color,
            label=label,
            lw=0.6,
        )


def _title(info: dict[str, Any]) -> str:
    cfg, s = info.get("config") or {}, info.get("settings") or {}
    t, st = cfg.get("teacher", {}), cfg.get("student", {})
    frozen = " (second layer fixed)" if 2 in (cfg.get("train", {}).get("freeze") or []) else ""
    return (
        f"{s.get('activation', t.get('activation'))}, d={info['input_dim']}, M={(t.get('widths') or ['?'])[0]}, "
        f"multi={st.get('multi')}, C={cfg.get('output_dim')}{frozen}, {len(info['seeds'])} seeds, "
        f"{s.get('method')} dt={s.get('dt')}"
    )


def _ode_panels(axes: list[Axes], info: dict[str, Any], loss: pd.DataFrame, order: pd.DataFrame) -> None:
    """Loss, best cosine per teacher and mean student-student cosine of the ODE, as lines (mean +- sd over seeds)."""
    from ..theory.ode_record import ode_cosines

    a, b, c = axes
    pos = loss[loss["t"] > 0]
    _band(a, mean_sd(pos, "t", "loss", log=True), "t", "black", "ODE", line=True)
    best = best_cosines(ode_cosines(order), "t")
    m = int(best["j"].max()) + 1 if len(best) else 0
    for j, g in mean_sd(best, "t", "cosine", ["j"]).groupby("j"):
        _band(b, g, "t", ordered_color(int(j), m), f"teacher {j} (ODE)", line=True)
    sc = student_cosines(order, "t")
    if len(sc):
        _band(c, mean_sd(sc, "t", "cosine"), "t", "black", "ODE", line=True)
    thr = info["specialization"]["threshold"]
    b.axhline(thr, color="grey", lw=0.6, ls=":")
    a.set(xscale="log", yscale="log", xlabel="t = step / d", ylabel="loss (the training objective)")
    b.set(xscale="log", xlabel="t = step / d", ylabel="best student cosine per teacher", ylim=(-0.05, 1.05))
    c.set(xscale="log", xlabel="t = step / d", ylabel="mean student-student cosine", ylim=(-1.05, 1.05))


@styled
def ode_figure(info: dict[str, Any], loss: pd.DataFrame, order: pd.DataFrame) -> Figure:
    """An ODE dir: loss vs t (log-log), best student cosine per teacher and mean student-student cosine vs t."""
    fig, axes = subplots(1, 3, panel=PANEL)
    _ode_panels(list(axes[0]), info, loss, order)
    for ax in axes[0]:
        ax.legend()
    fig.suptitle(f"order-parameter ODEs, mean ± sd over seeds (loss: of log10)\n{_title(info)}")
    return fig


@styled
def overlay_figure(run: Run, info: dict[str, Any], loss: pd.DataFrame, order: pd.DataFrame) -> Figure:
    """The run's stored loss and order-parameter cosines (points, mean +- sd over seeds) under the ODE's lines."""
    d = run.config.input_dim
    fig, axes = subplots(1, 3, panel=PANEL)
    a, b, c = axes[0]
    _ode_panels([a, b, c], info, loss, order)
    sc = run.scalars
    split = "eval" if (sc["split"] == "eval").any() else "train"
    sim = sc[(sc["split"] == split) & (sc["step"] > 0)].assign(t=lambda f: f["step"] / d)
    _band(a, mean_sd(sim, "t", "loss", log=True), "t", "tab:red", f"simulation ({split})", line=False)
    ro = run.table("order")
    ro = ro[(ro["layer"] == 1) & (ro["step"] > 0)].assign(t=lambda f: f["step"] / d)
    best = best_cosines(ro[ro["kind"] == "R"], "t")
    m = int(best["j"].max()) + 1 if len(best) else 0
    for j, g in mean_sd(best, "t", "cosine", ["j"]).groupby("j"):
        _band(b, g, "t", ordered_color(int(j), m), f"teacher {j} (sim.)", line=False)
    q = ro[ro["kind"] == "Q"]
    if (q["i"] < q["j"]).any():
        sims = q[q["i"] < q["j"]].groupby(["seed", "t"])["cosine"].mean().reset_index()
        _band(c, mean_sd(sims, "t", "cosine"), "t", "tab:red", "simulation", line=False)
    for ax in (a, b, c):
        ax.legend()
    b.set_title(specialization_note(info, run), fontsize=7)
    fig.suptitle(
        f"ODE (lines) on the run (points), mean ± sd over seeds (loss: of log10), t = step / d\n{_title(info)}"
    )
    return fig


def specialization_note(info: dict[str, Any], run: Run) -> str:
    """Per teacher, the median over seeds of the ODE's time-to-specialize (cosine of weights) and the run's
    (correlation of node outputs over the eval set), both in t; 'never' when the median seed never specialized."""
    from ..theory.ode_record import compare_specialization

    both = compare_specialization(info, run.time_to_specialize(), run.config.input_dim)
    both = both[both["seed"].isin(run.config.seeds)].fillna(float("inf"))

    def t(v: float) -> str:
        return "never" if v == float("inf") else f"{v:.3g}"

    parts = [f"{j}: ODE {t(g['ode_t'].median())}, run {t(g['run_t'].median())}" for j, g in both.groupby("teacher")]
    return "t to specialize per teacher (median over seeds)\n" + "; ".join(parts)


def _check_overlay(run: Run, info: dict[str, Any]) -> None:
    """ConfigError (one line) unless the run stored its order parameters and matches the ODE's seeds and input_dim."""
    from ..config import ConfigError

    if not run.config.eval.order or not run.has_table("order"):
        raise ConfigError(f"plot --ode: {run.path} has no order parameters to overlay (run it with eval.order=true)")
    if run.config.input_dim != info["input_dim"]:
        raise ConfigError(
            f"plot --ode: the run has input_dim={run.config.input_dim}, the ODE dir input_dim={info['input_dim']}"
        )
    if not set(run.config.seeds) & set(info["seeds"]):
        raise ConfigError("plot --ode: the run and the ODE dir share no seed")


def plot_ode(src: Path, out: Path, overlay: Path | None = None) -> list[Path]:
    """Draw an ODE dir (`src`), or a run dir `src` with the ODE dir `overlay` over it; write NAME.png/.pdf to `out`."""
    from ..store import claim_figures, load_run
    from ..theory.ode_record import load_ode

    if overlay is None:
        info, loss, order = load_ode(src)
        name, fig = "ode", ode_figure(info, loss, order)
    else:
        run = load_run(src)
        info, loss, order = load_ode(overlay)
        _check_overlay(run, info)
        seeds = set(run.config.seeds)
        loss, order = loss[loss["seed"].isin(seeds)], order[order["seed"].isin(seeds)]
        name, fig = "ode_overlay", overlay_figure(run, info, loss, order)
    try:
        claim_figures(out, [f"{name}.{ext}" for ext in FORMATS])
        return save(fig, out, name)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- `reproduce online` (paper/experiments/online.py)


@styled
def ode_vs_simulation(curve: pd.DataFrame, ode: pd.DataFrame) -> Figure:
    """One panel per (activation, second layer): per multi the ODE loss (line) and the simulation's (points, mean +-
    sd over seeds) vs t, log-log. curve: match_ode rows with job labels; ode: the ODE dirs' loss rows, labelled."""
    panels = ode[["activation", "trained_v"]].drop_duplicates().sort_values(["activation", "trained_v"])
    fig, axes = subplots(1, max(1, len(panels)), panel=PANEL)
    for ax, (_, p) in zip(axes[0], panels.iterrows()):
        sel = (ode["activation"] == p["activation"]) & (ode["trained_v"] == p["trained_v"])
        for multi, g in ode[sel & (ode["t"] > 0)].groupby("multi"):
            color = multi_color(float(multi))
            _band(ax, mean_sd(g, "t", "loss", log=True), "t", color, f"ODE, K={multi:g}M", line=True)
            c = curve[(curve["activation"] == p["activation"]) & (curve["trained_v"] == p["trained_v"])]
            c = c[(c["multi"] == multi) & (c["t"] > 0)]
            _band(ax, mean_sd(c, "t", "sim", log=True), "t", color, f"simulation, K={multi:g}M", line=False)
        layer = "both layers trained" if p["trained_v"] else "second layer fixed"
        ax.set(xscale="log", yscale="log", xlabel="t = step / d", ylabel="loss (half_sse J)")
        ax.set_title(f"{p['activation']}, {layer}")
        ax.legend()
    d = int(ode["d"].iloc[0]) if len(ode) else 0
    fig.suptitle(f"ODE vs simulation, M=2, d={d}, mean ± sd over seeds (loss: of log10)")
    return fig


@styled
def plateau(ode: pd.DataFrame, escape: pd.DataFrame, threshold: float) -> Figure:
    """ODE loss vs t per d (mean +- sd over seeds), and each seed's escape time (every teacher specialized) vs d on a
    log axis."""
    fig, axes = subplots(1, 2, panel=PANEL)
    a, b = axes[0]
    dims = sorted(ode["d"].unique())
    for i, d in enumerate(dims):
        g = mean_sd(ode[(ode["d"] == d) & (ode["t"] > 0)], "t", "loss", log=True)
        _band(a, g, "t", ordered_color(i, len(dims)), f"d={d}", line=True)
    a.set(xscale="log", yscale="log", xlabel="t = step / d", ylabel="ODE loss (half_sse J)", title="the plateau")
    a.legend()
    for i, d in enumerate(dims):
        e = escape[escape["d"] == d]
        b.plot(e["d"], e["escape_t"], "o", color=ordered_color(i, len(dims)), alpha=0.7, ms=4)
    med = escape.groupby("d")["escape_t"].median()
    b.plot(med.index, med.values, "-", color="black", label="median over seeds")
    b.set(xscale="log", xlabel="input dimension d", ylabel=f"escape t (every teacher: cosine > {threshold:g})")
    b.set_title("escape time vs d (straight: ~ log d)")
    b.legend()
    fig.suptitle(
        "symmetric plateau: soft committee machine, erf, K = M = 2, |w| = 0.1 at t = 0 (ODE of each seed's draw)"
    )
    return fig


@styled
def convergence_law(conv: pd.DataFrame) -> Figure:
    """Long-horizon ODE loss of realizable and over-realized erf students: semi-log and log-log panels."""
    fig, axes = subplots(1, 2, panel=PANEL)
    for ax, scale in zip(axes[0], ("semilog", "loglog")):
        for multi, g in conv[conv["t"] > 0].groupby("multi"):
            label = "K = M, fan-out 1" if multi == 1 else f"K = {multi:g}M, teacher fan-out 2 (over-realized)"
            _band(ax, mean_sd(g, "t", "loss", log=True), "t", multi_color(float(multi)), label, line=True)
        ax.set(yscale="log", xscale="log" if scale == "loglog" else "linear", xlabel="t = step / d")
        ax.set(
            ylabel="ODE loss (half_sse J)",
            title="semi-log: exponential is straight" if scale == "semilog" else "log-log: a power law is straight",
        )
        ax.legend()
    fig.suptitle("convergence of erf students, both layers trained, d = 1000 (ODE, mean ± sd of log10 J over seeds)")
    return fig
