"""The figures of a run dir: files written, decodable, one panel per hidden layer, robust to divergence."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest

from studentspec import Run, load_config, load_run, write_run
from studentspec import train
from studentspec.paper.figures import lshape_figure, mse_figure, plot_run, teacher_corr_figure

OVERRIDES = ["seeds=[1,2]", "input_dim=10", "output_dim=5", "teacher.widths=[3,4]", "student.multi=2",
             "data.n_train=200", "data.n_eval=200", "train.epochs=2", "train.steps_per_epoch=20"]
NAMES = ("lshape", "teacher_corr", "mse")


def _run(tmp: Path, extra: list[str] | None = None) -> Run:
    cfg = load_config(None, OVERRIDES + (extra or []))
    write_run(train(cfg, progress=False), tmp / "run")
    return load_run(tmp / "run")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("figures"))


def _check_files(paths: list[Path], out: Path) -> None:
    assert sorted(paths) == sorted(out / f"{n}.{e}" for n in NAMES for e in ("png", "pdf"))
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000, p
        if p.suffix == ".pdf":
            assert p.read_bytes()[:5] == b"%PDF-"
        else:
            img = mpimg.imread(p)
            assert img.ndim == 3 and img.shape[2] in (3, 4) and min(img.shape[:2]) > 200
            assert np.ptp(img[..., :3]) > 0.5  # something was drawn


def test_plot_run_writes_png_and_pdf(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "figs"
    _check_files(plot_run(run, out), out)
    assert plt.get_fignums() == []


def test_one_panel_per_hidden_layer(run: Run) -> None:
    fig = lshape_figure(run)
    assert [ax.get_title() for ax in fig.axes] == ["layer 1", "layer 2"]
    last = run.students[(run.students["split"] == "train") & (run.students["step"] == run.students["step"].max())]
    for layer, ax in enumerate(fig.axes, start=1):
        assert ax.get_xlabel() == "best teacher correlation" and ax.get_xlim()[1] == pytest.approx(1.1)
        points = sum(len(c.get_offsets()) for c in ax.collections)
        assert points == len(last[last["layer"] == layer]) == 2 * 2 * (3 if layer == 1 else 4)
    plt.close(fig)


def test_teacher_corr_lines_and_colorbar(run: Run) -> None:
    fig = teacher_corr_figure(run)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("layer")]
    assert len(panels) == 2 and len(fig.axes) == 3  # plus the colorbar
    assert "strength" in fig.axes[-1].get_ylabel()
    # one line per (seed, teacher) plus the threshold line
    assert [len(ax.lines) for ax in panels] == [2 * 3 + 1, 2 * 4 + 1]
    plt.close(fig)


def test_many_seeds_are_capped(tmp_path: Path) -> None:
    run = _run(tmp_path, ["seeds=[1,2,3,4,5]", "train.epochs=1"])
    fig = teacher_corr_figure(run)
    assert "first 4 of 5 seeds" in fig.get_suptitle()
    assert len(fig.axes[0].lines) == 4 * 3 + 1
    plt.close(fig)


def test_non_finite_mse_is_dropped(run: Run, tmp_path: Path) -> None:
    scalars = run.scalars.copy()
    late = (scalars["seed"] == 2) & (scalars["step"] > 0)
    scalars.loc[late, "mse"] = np.inf
    scalars.loc[(scalars["seed"] == 1) & (scalars["step"] == 0), "mse"] = np.nan
    students = run.students.copy()
    students.loc[students["seed"] == 2, "fanout_norm"] = np.inf
    broken = dataclasses.replace(run, scalars=scalars, students=students, summary={**run.summary, "diverged": {"2": 5}})
    fig = mse_figure(broken)
    ax = fig.axes[0]
    assert {line.get_label() for line in ax.lines} == {"train", "eval"}
    for line in ax.lines:
        assert np.isfinite(np.asarray(line.get_ydata(), dtype=float)).all()
    assert "diverged seeds: 2" in ax.get_title()
    plt.close(fig)
    out = tmp_path / "figs"
    _check_files(plot_run(broken, out), out)


def test_real_divergence_plots(tmp_path: Path) -> None:
    run = _run(tmp_path, ["train.lr=30.0", "student.init_std=null", "train.dtype=float32"])
    assert run.summary["diverged"]
    out = tmp_path / "figs"
    _check_files(plot_run(run, out), out)
