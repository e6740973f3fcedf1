"""The figures: files written, decodable, one panel per hidden layer, robust to divergence; every figure
(a run's, the paper's sweep figures, CIFAR-10's) drawn and saved in the one style of paper.style, with
one colour per multi everywhere and thresholds from the runs' eval.threshold."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.font_manager import findfont
from matplotlib.text import Text
from PIL import Image

import studentspec
from studentspec import Run, load_config, load_run, write_run
from studentspec import train
from studentspec.paper import conv_figures, grid_figures, style
from studentspec.paper.figures import (converge_figure, lshape_figure, mse_figure, plot_run, population_figure, teacher_corr_figure,
                                       theory_figure)

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


# ---------------------------------------------------------------- the one style

MULTI, DECAY = grid_figures.MULTI, grid_figures.DECAY
SPE = 20  # train.steps_per_epoch of OVERRIDES


@pytest.fixture(scope="module")
def theory_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("theory"), ["theory.enabled=true", "theory.samples=50", "train.epochs=1"])


def _sweep(run: Run, points: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """Tables shaped like sweep.load_sweep's: the run's tables once per grid point, with the point's keys and a job id."""
    return {name: pd.concat([getattr(run, name).assign(**point, job=f"job{i}") for i, point in enumerate(points)], ignore_index=True)
            for name in ("scalars", "teachers", "students")}


@pytest.fixture(scope="module")
def tables(run: Run) -> dict[str, pd.DataFrame]:
    points = [{MULTI: m, DECAY: p, "data.kind": kind, "data.n_train": n, "train.loss": "mse"}
              for m in (2.0, 5.0) for p in (0.5, 1.0) for kind, n in (("teacher_aware", 200), ("gaussian", 400))]
    t = _sweep(run, points)
    t["students"] = t["students"].assign(beta_norm=t["students"]["fanout_norm"])  # deep_lshape's column, any values
    return t


def _conv_runs(run: Run) -> dict[float, Run]:
    """Runs with the columns conv_figures reads (epoch, accuracy); the figures only read tables, config and summary."""
    r = dataclasses.replace(run, scalars=run.scalars.assign(epoch=run.scalars["step"] / SPE, accuracy=0.5),
                            teachers=run.teachers.assign(epoch=run.teachers["step"] / SPE))
    return {1.0: r, 2.0: r}


def _population_info(multi: float) -> dict[str, Any]:
    return {"seeds": [1, 2], "steps": [0, 10, 20], "loss": [[1.0, 0.5, 0.1], [1.0, 0.4, 0.2]], "teacher_angle_deg": [[1.0, 5.0], [2.0, 9.0]],
            "teacher_fanout_norm": [[1.0, 0.5], [1.0, 0.5]], "config": {"student": {"multi": multi}}}


def _converged(run: Run, folder: Path) -> Run:
    """The run with converge's files (made up) beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"seed": [1, 1, 2, 2], "angle_deg": [0.01, 30.0, 0.02, 45.0], "fanout_norm": [1.0, 0.01, 1.1, 0.02]}).to_parquet(
        folder / "converge_students.parquet")
    (folder / "converge.json").write_text(json.dumps({"angle_tol_deg": 1.0, "all_conclusions_hold": True,
                                                      "per_seed": {"1": {"grad_max": 1e-9}, "2": {"grad_max": 2e-9}}}))
    return dataclasses.replace(run, path=folder)


@pytest.fixture
def makers(run: Run, theory_run: Run, tables: dict[str, pd.DataFrame], tmp_path: Path) -> dict[str, Callable[[], Figure]]:
    """Every figure function of the package, each with inputs it can draw."""
    G, t = grid_figures, tables
    return {
        "lshape": lambda: lshape_figure(run), "teacher_corr": lambda: teacher_corr_figure(run), "mse": lambda: mse_figure(run),
        "theory": lambda: theory_figure(theory_run), "converge": lambda: converge_figure(_converged(run, tmp_path / "converged")),
        "population": lambda: population_figure(_population_info(2.0)),
        "grid_lshape": lambda: G.lshape(t["students"], "L"), "success_rate": lambda: G.success_rate(t["teachers"], SPE, SPE, "S"),
        "convergence": lambda: G.convergence(t["scalars"], SPE, "C"), "teacher_curves": lambda: G.teacher_curves(t["teachers"], 2.0, SPE, "T"),
        "sample_complexity": lambda: G.sample_complexity(t["scalars"], t["teachers"], "N"),
        "deep_lshape": lambda: G.deep_lshape(t["students"], SPE, "D"), "deep_rho_vs_n": lambda: G.deep_rho_vs_n(t["scalars"], "R"),
        "layer_corr": lambda: conv_figures.layer_corr_figure(_conv_runs(run)),
        "channel_corr": lambda: conv_figures.channel_corr_figure(_conv_runs(run)),
    }


def _png_size(path: Path) -> tuple[tuple[int, int], tuple[float, float]]:
    with Image.open(path) as img:
        return img.size, img.info["dpi"]


def _assert_style_size(path: Path, size_inches: np.ndarray) -> None:
    """A saved PNG is figsize * style.DPI pixels (to a pixel: the canvas rounds down) and says style.DPI."""
    pixels, dpi = _png_size(path)
    np.testing.assert_allclose(pixels, size_inches * style.DPI, atol=1.0, err_msg=str(path))
    assert dpi == pytest.approx((style.DPI, style.DPI), abs=0.1), path  # PNG stores pixels per metre


def test_every_figure_is_drawn_and_saved_in_the_one_style(makers: dict[str, Callable[[], Figure]], tmp_path: Path) -> None:
    assert style.DPI == 150 and plt.rcParams["font.family"] != ["serif"]  # the defaults outside differ: the style is applied, not inherited
    for name, make in makers.items():
        fig = make()
        texts = [t for t in fig.findobj(Text) if t.get_text()]
        assert texts, name
        for text in texts:  # fonts are fixed when a text is made: serif here means the style was on while drawing
            assert text.get_fontfamily() == ["serif"], (name, text.get_text())
            assert "Serif" in Path(findfont(text.get_fontproperties())).name, (name, text.get_text())
        assert fig.get_suptitle() == "" or fig._suptitle.get_fontsize() == style.STYLE["figure.titlesize"], name
        size = fig.get_size_inches()
        paths = style.save(fig, tmp_path / "out", name)
        assert paths == [tmp_path / "out" / f"{name}.png", tmp_path / "out" / f"{name}.pdf"]
        assert paths[1].read_bytes()[:5] == b"%PDF-"
        _assert_style_size(paths[0], size)
        assert plt.get_fignums() == [], name  # save closed it
    names = sorted(f"{n}.{e}" for n in makers for e in ("png", "pdf"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".studentspec", *names]  # the marker, no temporaries


def test_figure_modules_share_the_one_save_and_style() -> None:
    from studentspec.paper import figures

    assert figures.save is style.save and grid_figures.save is style.save and grid_figures.paper_style is style.paper_style
    assert grid_figures.multi_color is style.multi_color


def test_plot_run_saves_at_the_style_dpi(run: Run, tmp_path: Path) -> None:
    paths = plot_run(run, tmp_path / "figs")
    for name, make in zip(NAMES, (lshape_figure, teacher_corr_figure, mse_figure)):
        fig = make(run)
        size = fig.get_size_inches()
        plt.close(fig)
        assert tmp_path / "figs" / f"{name}.png" in paths
        _assert_style_size(tmp_path / "figs" / f"{name}.png", size)


def test_save_is_atomic_and_closes_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    style.save(style.subplots(1, 1)[0], tmp_path, "f")  # a figure folder studentspec made, holding f.png and f.pdf
    old = tmp_path / "f.png"
    old.write_bytes(b"old")
    before = sorted(p.name for p in tmp_path.iterdir())
    fig, _ = style.subplots(1, 1)

    def broken(*args: Any, **kwargs: Any) -> None:
        Path(args[0]).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        style.save(fig, tmp_path, "f")
    assert old.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary left, old file kept
    assert plt.get_fignums() == []


def _rgb(colors: Any) -> set[tuple[float, ...]]:
    return {tuple(round(float(v), 6) for v in to_rgb(c)) for c in colors}


def test_a_multi_has_one_colour_in_run_and_grid_figures(run: Run, tables: dict[str, pd.DataFrame]) -> None:
    multi = run.config.student.multi
    want, other = _rgb([style.multi_color(multi)]), _rgb([style.multi_color(5.0)])
    assert multi == 2.0 and want != other
    fig = lshape_figure(run)  # every seed's points, every layer
    assert _rgb(c for ax in fig.axes for coll in ax.collections for c in coll.get_facecolors()) == want
    plt.close(fig)
    fig = mse_figure(run)
    assert _rgb(line.get_color() for line in fig.axes[0].lines) == want
    plt.close(fig)
    fig = population_figure(_population_info(multi))
    assert _rgb(line.get_color() for ax in fig.axes for line in ax.lines) == want
    plt.close(fig)
    fig = grid_figures.lshape(tables["students"], "L")
    for ax in fig.axes:
        colours = _rgb(c for coll in ax.collections for c in coll.get_facecolors())
        assert colours == (want if ax.get_title().endswith("multi = 2") else other), ax.get_title()
    plt.close(fig)
    fig = grid_figures.convergence(tables["scalars"], SPE, "C")
    for ax in fig.axes:
        assert [_rgb([line.get_color()]) for line in ax.lines] == [want, other]  # multis in order: 2, 5
    plt.close(fig)


def test_ordered_curves_take_the_one_colour_map(run: Run) -> None:
    fig = conv_figures.layer_corr_figure(_conv_runs(run))
    for ax in fig.axes:
        lines = [line for line in ax.lines if line.get_label().startswith("layer")]
        assert [_rgb([line.get_color()]) for line in lines] == [_rgb([style.ordered_color(i, len(lines))]) for i in range(len(lines))]
        assert len(set(map(frozenset, (_rgb([line.get_color()]) for line in lines)))) == len(lines) == 2
    plt.close(fig)


# ---------------------------------------------------------------- thresholds: eval.threshold, never a literal

def _with_threshold(run: Run, threshold: float) -> Run:
    return dataclasses.replace(run, config=load_config(None, OVERRIDES + [f"eval.threshold={threshold}"]))


def _hlines(ax: Any) -> list[float]:
    """y of the horizontal lines across an axes (axhline: x from 0 to 1 in axes coordinates)."""
    return [float(line.get_ydata()[0]) for line in ax.lines if list(line.get_xdata()) == [0, 1] and len(set(line.get_ydata())) == 1]


def test_run_figures_draw_the_runs_eval_threshold(run: Run) -> None:
    drawn: dict[float, tuple[list[float], list[float], list[float]]] = {}
    for thr in (0.9, 0.99):
        r = _with_threshold(run, thr)
        fig = lshape_figure(r)
        vertical = [float(line.get_xdata()[0]) for ax in fig.axes for line in ax.lines if len(set(line.get_xdata())) == 1]
        plt.close(fig)
        fig = teacher_corr_figure(r)
        horizontal = [y for ax in fig.axes for y in _hlines(ax)]
        plt.close(fig)
        fig = conv_figures.channel_corr_figure(_conv_runs(r))
        channel = [y for ax in fig.axes for y in _hlines(ax)]
        plt.close(fig)
        assert vertical == [r.config.eval.threshold] * 2 and horizontal == [r.config.eval.threshold] * 2
        assert channel == [r.config.eval.threshold] * len(channel) and len(channel) == 4  # 2 multis x 2 layers
        drawn[thr] = (vertical, horizontal, channel)
    assert drawn[0.9] != drawn[0.99]


def _stored(tables: dict[str, pd.DataFrame], threshold: float) -> pd.DataFrame:
    """The same best correlations, stored by runs whose eval.threshold was `threshold` (specialized = best_corr > it)."""
    te = tables["teachers"]
    best = np.random.default_rng(0).uniform(0.85, 1.0, len(te))
    return te.assign(best_corr=best, specialized=best > threshold)


def _success_lines(fig: Figure) -> list[np.ndarray]:
    return [np.asarray(line.get_ydata(), float) for ax in fig.axes for line in ax.lines]


def _expected_success(te: pd.DataFrame, threshold: float) -> list[np.ndarray]:
    """Per panel (decay), per multi: success rate per teacher after epoch 1 (dotted) and at the end (solid)."""
    te = te[(te["split"] == "eval") & (te["layer"] == 1)]
    out = []
    for p in sorted(te[DECAY].unique()):
        for m in sorted(te[MULTI].unique()):
            g = te[(te[DECAY] == p) & (te[MULTI] == m)]
            for step in (SPE, g["step"].max()):
                out.append((g[g["step"] == step]["best_corr"] > threshold).groupby(g["teacher"]).mean().to_numpy())
    return out


def test_sweep_figures_count_specialized_with_the_runs_threshold(tables: dict[str, pd.DataFrame]) -> None:
    lines = {}
    for thr in (0.9, 0.99):
        te = _stored(tables, thr)
        fig = grid_figures.success_rate(te, SPE, SPE, "S")  # no threshold given: the stored column decides
        lines[thr] = _success_lines(fig)
        assert "specialized" in fig.axes[0].get_ylabel()
        plt.close(fig)
        for got, want in zip(lines[thr], _expected_success(te, thr), strict=True):
            np.testing.assert_array_equal(got, want)
        other = _stored(tables, 0.5)  # stored with another threshold: a threshold given decides instead
        fig = grid_figures.success_rate(other, SPE, SPE, "S", threshold=thr)
        for got, want in zip(_success_lines(fig), lines[thr], strict=True):
            np.testing.assert_array_equal(got, want)
        assert f"{thr:g}" in fig.axes[0].get_ylabel()
        plt.close(fig)
    assert any((a != b).any() for a, b in zip(lines[0.9], lines[0.99]))


def test_teacher_curves_mark_specialization_and_draw_the_threshold(tables: dict[str, pd.DataFrame]) -> None:
    marks = {}
    for thr in (0.9, 0.99):
        te = _stored(tables, thr)
        fig = grid_figures.teacher_curves(te, 2.0, SPE, "T")
        assert all(_hlines(ax) == [] for ax in fig.axes)  # the threshold is not known: no line (never a made-up one)
        marks[thr] = [sum(len(c.get_offsets()) for c in ax.collections) for ax in fig.axes if ax.get_title().startswith("p =")]
        one = te[(te["split"] == "eval") & (te["layer"] == 1) & (te[MULTI] == 2.0) & (te["seed"] == te["seed"].min())]
        assert marks[thr] == [one[one[DECAY] == p].groupby("teacher")["specialized"].any().sum() for p in sorted(one[DECAY].unique())]
        plt.close(fig)
        for fig in (grid_figures.teacher_curves(te, 2.0, SPE, "T", threshold=thr),
                    grid_figures.teacher_curves(te.assign(**{"eval.threshold": thr}), 2.0, SPE, "T")):
            panels = [ax for ax in fig.axes if ax.get_title().startswith("p =")]
            assert [_hlines(ax) for ax in panels] == [[thr]] * len(panels) == [[thr]] * 2
            assert [sum(len(c.get_offsets()) for c in ax.collections) for ax in panels] == marks[thr]
            plt.close(fig)
    assert marks[0.9] != marks[0.99]


# ---------------------------------------------------------------- imports

def test_figure_modules_do_not_import_the_trainer() -> None:
    """Imported with a bare `studentspec` package (its __init__ skipped), the figure modules pull in no torch, trainer, store or sweep."""
    code = ("import sys, types\n"
            f"pkg = types.ModuleType('studentspec'); pkg.__path__ = [{str(Path(studentspec.__file__).parent)!r}]\n"
            "sys.modules['studentspec'] = pkg\n"
            "import studentspec.paper.figures, studentspec.paper.grid_figures, studentspec.paper.conv_figures, studentspec.paper.style\n"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'studentspec'))))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "studentspec.paper.figures" in loaded and "studentspec.paper.style" in loaded
    heavy = [m for m in loaded if m.split(".")[0] == "torch" or m.startswith(("studentspec.mlp", "studentspec.sweep", "studentspec.store",
                                                                               "studentspec.conv", "studentspec.theory"))]
    assert heavy == []


def test_population_figure_draws_non_finite_values_as_gaps() -> None:
    """population.json stores a non-finite loss or angle as null (strict JSON): the curve has a gap, not a crash."""
    from studentspec.paper.figures import population_figure

    info = {"seeds": [1, 2], "steps": [0, 1, 2], "loss": [[1.0, None, 0.5], [2.0, 1.0, None]],
            "teacher_angle_deg": [[10.0, None], [3.0, 4.0]], "teacher_fanout_norm": [[1.0, 0.5], [None, 0.5]]}
    fig = population_figure(info)
    line = fig.axes[0].get_lines()[0]
    assert np.isnan(line.get_ydata()[1]) and line.get_ydata()[2] == 0.5
    plt.close(fig)
