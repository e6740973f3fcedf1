"""Figures of a stored run: the L-shape scatter, teacher-correlation curves and MSE curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..ensemble.atomic import atomic_write
from ..store import Run, StoreError, read_json

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 120
MAX_SEEDS = 4
CMAP = "viridis"


def config_title(run: Run) -> str:
    """One-line summary of the run's config for figure titles."""
    c = run.config
    text = f"m={c.teacher.widths} multi={c.student.multi:g} p={c.teacher.decay:g}"
    diverged = run.summary.get("diverged") or {}
    return f"{text} (diverged seeds: {', '.join(map(str, diverged))})" if diverged else text


def _split(df: pd.DataFrame, prefer: str, fallback: str) -> tuple[pd.DataFrame, str]:
    name = prefer if (df["split"] == prefer).any() else fallback
    return df[df["split"] == name], name


def _panels(run: Run) -> tuple[Figure, list[Axes]]:
    n = len(run.config.teacher.widths)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 0.8, 3.9), squeeze=False, layout="constrained")
    return fig, list(axes[0])


def lshape_figure(run: Run) -> Figure:
    """Fan-out norm vs best-teacher correlation of every student node at the last step."""
    df, split = _split(run.students, "train", "eval")
    step = int(df["step"].max())
    df = df[(df["step"] == step) & np.isfinite(df["best_corr"]) & np.isfinite(df["fanout_norm"])]
    fig, axes = _panels(run)
    label_seeds = df["seed"].nunique() <= 10
    for layer, ax in enumerate(axes, start=1):
        rows = df[df["layer"] == layer]
        for seed, s in rows.groupby("seed"):
            ax.scatter(s["best_corr"], s["fanout_norm"], s=10, alpha=0.5, label=f"seed {seed}" if label_seeds else None)
        ax.axvline(run.config.eval.threshold, color="grey", ls=":", lw=1, label=f"threshold {run.config.eval.threshold:g}")
        lo = min(0.0, float(rows["best_corr"].min())) if len(rows) else 0.0
        ax.set_xlim(lo - 0.05, 1.1)
        ax.set_ylim(bottom=-0.05)
        ax.set(xlabel="best teacher correlation", ylabel="fan-out norm ||v_k||", title=f"layer {layer}")
        ax.legend(fontsize="x-small")
    fig.suptitle(f"student nodes at step {step} ({split})\n{config_title(run)}", fontsize="medium")
    return fig


def teacher_corr_figure(run: Run) -> Figure:
    """Best correlation of each teacher node vs step, coloured by fan-out norm; dead teacher nodes dotted."""
    df, split = _split(run.teachers, "eval", "train")
    seeds = list(dict.fromkeys(df["seed"]))
    df = df[df["seed"].isin(seeds[:MAX_SEEDS])]
    norm = Normalize(float(df["fanout_norm"].min()), float(df["fanout_norm"].max()))
    cmap = plt.get_cmap(CMAP)
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
        ax.legend(fontsize="x-small", loc="lower right")
    fig.colorbar(ScalarMappable(norm, cmap), ax=axes, label="teacher fan-out norm (strength)")
    shown = f"first {MAX_SEEDS} of {len(seeds)} seeds" if len(seeds) > MAX_SEEDS else f"{len(seeds)} seeds"
    fig.suptitle(f"teacher nodes, best correlation ({split}, {shown})\n{config_title(run)}", fontsize="medium")
    return fig


def mse_figure(run: Run) -> Figure:
    """log10 MSE vs step, mean +- std over seeds, per split; non-finite values are dropped."""
    df = run.scalars[np.isfinite(run.scalars["mse"]) & (run.scalars["mse"] > 0)]
    df = df.assign(log_mse=np.log10(df["mse"]))
    fig, ax = plt.subplots(figsize=(6.0, 4.2), layout="constrained")
    for split in [s for s in ("train", "eval") if (df["split"] == s).any()]:
        g = df[df["split"] == split].groupby("step")["log_mse"].agg(["mean", "std"]).fillna(0.0)
        (line,) = ax.plot(g.index, g["mean"], label=split)
        ax.fill_between(g.index, g["mean"] - g["std"], g["mean"] + g["std"], color=line.get_color(), alpha=0.2)
    ax.set(xlabel="step", ylabel="log10 MSE")
    ax.legend()
    ax.set_title(f"MSE, mean ± std over seeds\n{config_title(run)}", fontsize="medium")
    return fig


def theory_figure(run: Run) -> Figure:
    """Theory diagnostics: sqrt(E beta_kk) L-shape per layer, per-sample gradient norms, lowest-layer angles."""
    st = run.students.dropna(subset=["beta_norm"])
    step = int(st["step"].max())
    n = len(run.config.teacher.widths)
    fig, axes = plt.subplots(2, max(n, 2), figsize=(4.2 * max(n, 2), 7.4), squeeze=False, layout="constrained")
    for layer, ax in enumerate(axes[0][:n], start=1):
        rows = st[(st["step"] == step) & (st["layer"] == layer)]
        ax.scatter(rows["best_corr"], rows["beta_norm"], s=10, alpha=0.5)
        ax.set(xlabel="best teacher correlation", ylabel="sqrt(E_x beta_kk)", title=f"layer {layer}, step {step}")
    ax = axes[1][0]
    sc = run.scalars.dropna(subset=[c for c in run.scalars.columns if c.startswith("ps_grad_max_")])
    for l in range(1, n + 2):
        g = sc.groupby("step")[[f"ps_grad_max_{l}", f"ps_grad_mean_{l}"]].median()
        (line,) = ax.semilogy(g.index, g[f"ps_grad_max_{l}"], label=f"layer {l} max")
        ax.semilogy(g.index, g[f"ps_grad_mean_{l}"], ls="--", color=line.get_color(), label=f"layer {l} mean")
    ax.set(xlabel="step", ylabel="per-sample gradient norm (median over seeds)", title="gradient at every sample")
    ax.legend(fontsize="x-small")
    ax = axes[1][1]
    te = run.teachers.dropna(subset=["min_angle"])
    for (seed, j), t in te[te["seed"].isin(list(dict.fromkeys(te["seed"]))[:MAX_SEEDS])].groupby(["seed", "teacher"]):
        ax.semilogy(t["step"], t["min_angle"].clip(lower=1e-6), lw=1, alpha=0.8)
    ax.set(xlabel="step", ylabel="angle to nearest student (deg)", title="lowest layer: weight alignment")
    for ax in axes[0][n:]:
        ax.set_visible(False)
    for ax in axes[1][2:]:
        ax.set_visible(False)
    fig.suptitle(f"theory diagnostics\n{config_title(run)}", fontsize="medium")
    return fig


def converge_figure(run: Run) -> Figure:
    """After `studentspec converge`: each student's angle to its nearest teacher vs its fan-out norm."""
    st = pd.read_parquet(run.path / "converge_students.parquet")
    info = read_json(run.path / "converge.json")
    fig, ax = plt.subplots(figsize=(6.0, 4.2), layout="constrained")
    for seed, s in st.groupby("seed"):
        ax.scatter(np.clip(s["angle_deg"], 1e-6, None), s["fanout_norm"], s=12, alpha=0.6, label=f"seed {seed}")
    ax.set_xscale("log")
    ax.axvline(info["angle_tol_deg"], color="grey", ls=":", lw=1, label="angle tolerance")
    ax.set(xlabel="angle to nearest teacher (deg, lowest layer)", ylabel="fan-out norm ||v_k||")
    ax.legend(fontsize="x-small")
    grads = ", ".join(f"{r['grad_max']:.1e}" for r in info["per_seed"].values())
    ax.set_title(f"at the critical point (max per-sample gradient {grads})\nall conclusions hold: {info['all_conclusions_hold']}", fontsize="medium")
    return fig


def population_figure(info: dict[str, Any]) -> Figure:
    """Gradient flow on the population loss: loss vs step per seed, final angle per teacher vs strength."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for seed, loss in zip(info["seeds"], info["loss"]):
        a.semilogy(info["steps"], np.clip(loss, 1e-16, None), lw=1, label=f"seed {seed}")
    a.set(xlabel="gradient step", ylabel="population loss J", title="gradient flow (infinite data)")
    a.legend(fontsize="x-small")
    for seed, ang, fan in zip(info["seeds"], info["teacher_angle_deg"], info["teacher_fanout_norm"]):
        b.semilogy(fan, np.clip(ang, 1e-6, None), "o", alpha=0.7, label=f"seed {seed}")
    b.set(xlabel="teacher fan-out norm (strength)", ylabel="angle to nearest student (deg)", title="specialization at the end")
    return fig


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Save a figure as PNG and PDF in out_dir (each file written atomically) and close it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        paths = [out_dir / f"{name}.{ext}" for ext in ("png", "pdf")]
        for path in paths:
            atomic_write(path, lambda tmp, ext=path.suffix[1:]: fig.savefig(tmp, dpi=DPI, format=ext))
        return paths
    finally:
        plt.close(fig)


def plot_run(run: Run, out_dir: Path) -> list[Path]:
    """Write lshape, teacher_corr, mse (and theory, when stored) figures as PNG and PDF; return their paths."""
    out_dir = Path(out_dir)
    paths = []
    figures = [("lshape", lshape_figure), ("teacher_corr", teacher_corr_figure), ("mse", mse_figure)]
    if "beta_norm" in run.students.columns:
        figures.append(("theory", theory_figure))
    if (run.path / "converge.json").is_file():
        figures.append(("converge", converge_figure))
    made: list[tuple[str, Figure]] = []
    try:  # every figure is drawn before any is written: a run that cannot be drawn leaves no partial set
        for name, make in figures:
            try:
                made.append((name, make(run)))
            except (KeyError, ValueError, TypeError) as err:  # loadable tables that lack what a figure reads
                raise StoreError(f"{run.path}: cannot draw {name} from its tables ({err.__class__.__name__}: {err})") from None
    except BaseException:
        for _, fig in made:
            plt.close(fig)
        raise
    for name, fig in made:
        paths += save(fig, out_dir, name)
    return paths
