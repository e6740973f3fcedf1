"""Weight-space order parameters (eval.order -> order.parquet): R, Q, T of the augmented weights [w; b] against NumPy
on the stored weights, their storage (upper triangles, T once), seed alone == inside an ensemble, the R heatmap,
and the store's handling of the extra table. Training runs use train.loss=half_sse (the paper's J = 1/2 sum over
outputs, mean over the batch; the config default): the numbers compared depend on it only through the weights,
which both sides read from the same run."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from studentspec import pipelines
from studentspec.cli import main
from studentspec.config import load_config
from studentspec.mlp import order, record
from studentspec.mlp.memory import estimate
from studentspec.paper.figures import plot_run
from studentspec.paper.order_figures import order_figure
from studentspec.store import Run, RunRecord, StoreError, load_run, owned, write_record
from studentspec.theory.metric import METRICS

TINY = ["input_dim=6", "output_dim=4", "teacher.widths=[3,2]", "student.multi=2", "data.n_train=120", "data.n_eval=100",
        "train.steps_per_epoch=20", "train.epochs=2", "train.lr=0.05", "train.loss=half_sse", "seeds=[1,2]"]


def _run(path: Path, *extra: str) -> Run:
    cfg = pipelines.load_config(None, [*TINY, *extra])
    return load_run(write_record(pipelines.record(pipelines.train(cfg, progress=False)), path))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("order") / "run", "eval.order=true")


def _aug(weights: dict[str, np.ndarray], net: str, layer: int, pos: int) -> np.ndarray:
    """Augmented weights of one seed's layer from weights.npz: [fan_in + 1, width], column k = [w_k; b_k]."""
    return np.vstack([weights[f"{net}.W{layer}"][pos], weights[f"{net}.b{layer}"][pos][None, :]]).astype(np.float64)


def _matrix(order: pd.DataFrame, kind: str, seed: int, step: int, layer: int, col: str, shape: tuple[int, int]) -> np.ndarray:
    """One stored block as a full matrix (Q and T mirrored from their upper triangle); NaN where nothing is stored."""
    rows = order[(order["kind"] == kind) & (order["seed"] == seed) & (order["step"] == step) & (order["layer"] == layer)]
    out = np.full(shape, np.nan)
    out[rows["i"], rows["j"]] = rows[col]
    if kind in ("Q", "T"):
        out[rows["j"], rows["i"]] = rows[col]
    return out


def _oracle(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain NumPy: inner products of the columns of a and b, and their cosines."""
    inner = np.einsum("dk,dj->kj", a, b)
    cos = inner / np.outer(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0))
    return inner, cos


def _check_against(order: pd.DataFrame, weights: dict[str, np.ndarray], cfg, step: int, kinds: tuple[str, ...]) -> None:
    """Every stored block of `kinds` at `step` equals NumPy on `weights` (stored weights.npz of some run)."""
    for pos, seed in enumerate(cfg.seeds):
        for layer in range(1, len(cfg.teacher.widths) + 1):
            s, t = _aug(weights, "student", layer, pos), _aug(weights, "teacher", layer, pos)
            pairs = {"Q": (s, s), "T": (t, t)} | ({"R": (s, t)} if layer == 1 else {})
            for kind in kinds:
                if kind not in pairs:
                    continue
                a, b = pairs[kind]
                inner, cos = _oracle(a, b)
                for col, want in (("inner", inner), ("cosine", cos)):
                    got = _matrix(order, kind, seed, step, layer, col, want.shape)
                    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=f"{kind} {col} seed {seed} layer {layer}")


def test_final_R_Q_T_equal_numpy_on_the_stored_weights(run: Run) -> None:
    order, cfg = run.table("order"), run.config
    last = int(run.scalars["step"].max())
    _check_against(order, run.weights(), cfg, last, ("R", "Q"))
    _check_against(order, run.weights(), cfg, 0, ("T",))
    assert set(order.loc[order["kind"] == "R", "layer"]) == {1}  # R only where teacher and student share the input space
    assert set(order.loc[order["kind"] == "Q", "layer"]) == set(order.loc[order["kind"] == "T", "layer"]) == {1, 2}
    t1 = order[(order["kind"] == "T") & (order["layer"] == 1) & (order["i"] == order["j"])]
    np.testing.assert_allclose(t1["inner"], 1.0 + cfg.teacher.bias**2, rtol=1e-12)  # unit rows + bias -0.1 (docs/model.md 4.1)


def test_step_0_equals_numpy_on_the_initial_weights(run: Run, tmp_path: Path) -> None:
    """The initial weights, rebuilt by a run of the same seeds that trains for zero epochs (its stored weights)."""
    init = _run(tmp_path / "init", "train.epochs=0")
    assert not np.array_equal(init.weights()["student.W1"], run.weights()["student.W1"])  # training moved the student
    _check_against(run.table("order"), init.weights(), run.config, 0, ("R", "Q", "T"))


def test_float32_runs_are_measured_in_float64_on_their_weights(tmp_path: Path) -> None:
    r = _run(tmp_path / "f32", "eval.order=true", "train.dtype=float32", "seeds=[3]")
    assert r.weights()["student.W1"].dtype == np.float32
    _check_against(r.table("order"), r.weights(), r.config, int(r.scalars["step"].max()), ("R", "Q"))


def test_storage_is_long_with_upper_triangles_and_T_once(run: Run) -> None:
    order, cfg = run.table("order"), run.config
    assert list(order.columns) == ["seed", "step", "layer", "kind", "i", "j", "cosine", "inner"]
    steps = sorted(set(run.scalars["step"]))
    m, n = cfg.teacher.widths, cfg.student_widths
    S = len(cfg.seeds)
    for (kind, layer, step), g in order.groupby(["kind", "layer", "step"]):
        assert set(g["seed"]) == set(cfg.seeds)
        assert not g.duplicated(["seed", "i", "j"]).any()
        if kind in ("Q", "T"):
            assert (g["i"] <= g["j"]).all()
            width = (n if kind == "Q" else m)[layer - 1]
            assert len(g) == S * width * (width + 1) // 2
        else:
            assert len(g) == S * n[0] * m[0]
    assert sorted(set(order.loc[order["kind"] == "T", "step"])) == [0]
    assert sorted(set(order.loc[order["kind"] == "R", "step"])) == sorted(set(order.loc[order["kind"] == "Q", "step"])) == steps
    assert order["cosine"].between(-1, 1).all()
    diag = order[(order["kind"] != "R") & (order["i"] == order["j"])]
    np.testing.assert_allclose(diag["cosine"], 1.0, rtol=1e-12)


def test_a_seed_alone_equals_the_seed_inside_an_ensemble(run: Run, tmp_path: Path) -> None:
    alone = _run(tmp_path / "alone", "eval.order=true", "seeds=[2]").table("order")
    inside = run.table("order")
    inside = inside[inside["seed"] == 2].reset_index(drop=True)
    assert len(alone) == len(inside) > 0
    pd.testing.assert_frame_equal(alone, inside, check_exact=True)


def test_the_R_heatmap_orders_students_by_best_teacher(run: Run, tmp_path: Path) -> None:
    order, seed = run.table("order"), run.config.seeds[0]
    steps = sorted(set(order.loc[order["kind"] == "R", "step"]))
    m, n = run.config.teacher.widths[0], run.config.student_widths[0]
    fig = order_figure(run)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 3 == len(steps)  # first, middle, last of the 3 evaluations
    last = _matrix(order, "R", seed, steps[-1], 1, "cosine", (n, m))
    rows = sorted(range(n), key=lambda k: (int(np.argmax(last[k])), -last[k].max()))  # best teacher, then closest first
    assert rows != list(range(n))  # the ordering is visible in this run
    for img, step in zip(images, steps):
        np.testing.assert_array_equal(np.asarray(img.get_array()), _matrix(order, "R", seed, step, 1, "cosine", (n, m))[rows])
    best = np.asarray(images[-1].get_array()).argmax(axis=1)
    assert (np.diff(best) >= 0).all()
    plt.close(fig)
    paths = plot_run(run, tmp_path / "figs")
    assert {tmp_path / "figs" / f"order.{e}" for e in ("png", "pdf")} <= set(paths)
    assert all(p.stat().st_size > 1000 for p in paths)


def test_a_resumed_run_continues_the_restored_table() -> None:
    """The table contract of a resumed run: the rows its checkpoint restored, then this process's, T not repeated."""
    result = pipelines.train(pipelines.load_config(None, [*TINY, "eval.order=true"]), progress=False)
    measured = [(p.step, p.extra["order"]) for p in result.evals if "order" in p.extra]
    assert [step for step, _ in measured] == [0, 20, 40]
    cfg, teacher = result.setup.cfg, result.setup.teacher
    whole = order.table(cfg, teacher, measured)
    resumed = order.table(cfg, teacher, measured[2:], order.table(cfg, teacher, measured[:2]))
    pd.testing.assert_frame_equal(resumed, whole, check_exact=True)
    assert record.metric_tables(result)["order"].equals(whole)
    # as mlp/record.py sees a run resumed from a checkpoint written after step 20: earlier rows restored, later evaluated
    result.restored = {"order": order.table(cfg, teacher, measured[:2])}
    result.evals = [p for p in result.evals if p.step > 20]
    pd.testing.assert_frame_equal(record.metric_tables(result)["order"], whole, check_exact=True)
    result.evals = []  # a checkpoint written after the last evaluation: nothing new
    pd.testing.assert_frame_equal(record.metric_tables(result)["order"], result.restored["order"], check_exact=True)


def test_a_run_without_the_flag_has_no_order_table(tmp_path: Path) -> None:
    plain = _run(tmp_path / "plain")
    assert plain.config.eval.order is False and not (plain.path / "order.parquet").exists() and not plain.has_table("order")
    with pytest.raises(StoreError, match="order.parquet: missing"):
        plain.table("order")
    assert not any(p.name.startswith("order.") for p in plot_run(plain, tmp_path / "figs"))


def test_a_corrupt_order_table_is_a_store_error_naming_the_file(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    out.mkdir()
    for f in run.path.iterdir():
        if f.is_file():
            (out / f.name).write_bytes(f.read_bytes())
    (out / "order.parquet").write_bytes(b"not a parquet file")
    copy = load_run(out)  # the extra table is read lazily
    with pytest.raises(StoreError, match=r"order\.parquet: corrupt"):
        copy.table("order")
    with pytest.raises(StoreError, match=r"order\.parquet"):
        plot_run(copy, tmp_path / "figs")
    pd.DataFrame({"x": [1]}).to_parquet(out / "order.parquet")
    with pytest.raises(StoreError, match=r"order\.parquet: column 'seed' missing"):
        load_run(out).table("order")
    with pytest.raises(StoreError, match="nope.parquet: missing .*its tables: scalars, teachers, students, order"):
        copy.table("nope")


def test_overwrite_accepts_a_run_dir_holding_order_parquet(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = str(Path(__file__).resolve().parents[1] / "configs" / "two_layer_quick.yaml")
    args = ["run", config, *TINY, "seeds=[1]", "eval.order=true"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0 and (out / "order.parquet").is_file()
    assert "order.parquet" in owned(out, "run").files  # the marker records it: --overwrite may replace it
    assert main(["plot", str(out)]) == 0 and (out / "figures" / "order.png").is_file()
    assert main([*args, "train.lr=0.02", "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert load_run(out).config.train.lr == 0.02 and (out / "order.parquet").is_file()


def test_the_store_takes_any_validly_named_table_and_lists_it(run: Run, tmp_path: Path) -> None:
    frame = pd.DataFrame({"seed": [1], "step": [0], "split": ["eval"]})
    three = {name: run.table(name) for name in ("scalars", "teachers", "students")}
    for bad in ("../x", "Mine", "converge_hessian", ""):
        with pytest.raises(ValueError, match="table name"):
            write_record(RunRecord(run.config, {**three, bad: frame}, {}, {}), tmp_path / "bad")
    with pytest.raises(ValueError, match="tables"):
        write_record(RunRecord(run.config, {"scalars": three["scalars"], "order": frame}, {}, {}), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    back = load_run(write_record(RunRecord(run.config, {**three, "mine": frame.drop(columns="split")}, run.weights(), run.summary),
                                 tmp_path / "ok"))
    assert back.table_names == ["scalars", "teachers", "students", "mine"] and back.table("mine").equals(frame.drop(columns="split"))
    assert not back.has_table("order")


def test_a_run_written_before_runs_listed_their_tables_still_reads_order(run: Run, tmp_path: Path) -> None:
    """summary.json without "tables" (the previous version's runs): order.parquet is read where it is there."""
    out = tmp_path / "old"
    out.mkdir()
    for f in run.path.iterdir():
        if f.is_file() and f.name != ".studentspec":
            (out / f.name).write_bytes(f.read_bytes())
    summary = json.loads((out / "summary.json").read_text())
    del summary["tables"]
    (out / "summary.json").write_text(json.dumps(summary))
    old = load_run(out)
    assert old.table_names == ["scalars", "teachers", "students", "order"] and old.table("order").equals(run.table("order"))
    (out / "order.parquet").unlink()
    assert load_run(out).table_names == ["scalars", "teachers", "students"]


def test_the_order_metric_declares_its_table_switch_memory_and_figure() -> None:
    m = METRICS.get("order")
    assert m is order.METRIC and m.switch == "eval.order" and m.table is not None and m.table.name == "order"
    assert list(m.table.columns) == list(order.COLUMNS) and m.figure is not None and m.figure.function() is order_figure
    assert [x.name for x in METRICS.enabled(load_config(None, TINY))] == []
    assert [x.name for x in METRICS.enabled(load_config(None, [*TINY, "eval.order=true"]))] == ["order"]
    cfg = load_config(None, [*TINY, "eval.order=true"])
    # 3 evaluations x 2 seeds x (R 6x3 + Q 6x6 + Q 4x4 floats, then R 18 + Q 21 + Q 10 rows of 52 bytes, twice)
    assert estimate(cfg, METRICS.values())["metric tables"] == 3 * 2 * (8 * (18 + 36 + 16) + 2 * 52 * (18 + 21 + 10))
    assert estimate(load_config(None, TINY), METRICS.values())["metric tables"] == 0
