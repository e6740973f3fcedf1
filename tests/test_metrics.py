"""Streaming correlation and specialization statistics vs numpy.corrcoef and brute force; the per-evaluation metric
contract (mlp/metrics.py): a metric defined outside the package is one registration, an unlisted or unknown one is an
error (objective: the paper's half_sse, the config default)."""

import importlib
import pkgutil
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

import studentspec
from studentspec import pipelines
from studentspec.config import load_config
from studentspec.ensemble.corr import CorrAccumulator, layer_stats, rho_mean
from studentspec.mlp.memory import estimate
from studentspec.mlp.metrics import Columns, Context, EvalMetric, Figure, MetricRegistry, Rows, Table, check_listed
from studentspec.paper.figures import plot_run
from studentspec.paper.report import run_captions
from studentspec.store import StoreError, load_run
from studentspec.theory.metric import METRICS

# docs/model.md 2.3: the counts of students above 0.5, 0.6, 0.7, 0.8, 0.9 and 0.95 per teacher (the spec's list, not the code's)
SPEC_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def numpy_corr(t: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Oracle: corrcoef of the stacked columns, the [teacher, student] block, NaN (dead) -> 0."""
    m = t.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(np.concatenate([t, s], axis=1), rowvar=False)[:m, m:]
    return np.nan_to_num(c, nan=0.0)


@pytest.mark.parametrize("chunk", [1000, 7, 64])
def test_streaming_corr_matches_numpy_with_dead_units(chunk):
    g = np.random.default_rng(0)
    S, N, m, n = 3, 500, 4, 6
    t = np.maximum(g.normal(size=(S, N, m)) + 0.2, 0)
    s = np.maximum(g.normal(size=(S, N, n)) + 0.5 * t[:, :, [0, 1, 2, 3, 0, 1]], 0)
    t[1, :, 2] = 0.0  # dead teacher node
    s[0, :, 3] = 0.0  # dead student node
    s[2, :, 5] = 3.7  # constant (active but zero variance) student node
    acc = CorrAccumulator()
    for i in range(0, N, chunk):
        acc.update(torch.from_numpy(t[:, i : i + chunk]), torch.from_numpy(s[:, i : i + chunk]))
    corr = acc.corr().numpy()
    assert not np.isnan(corr).any()
    for k in range(S):
        np.testing.assert_allclose(corr[k], numpy_corr(t[k], s[k]), atol=1e-12)
    assert (corr[1, 2] == 0).all() and (corr[0, :, 3] == 0).all() and (corr[2, :, 5] == 0).all()


def test_corr_of_float32_inputs_with_large_offset_is_accurate():
    g = np.random.default_rng(1)
    t = (g.normal(size=(1, 4000, 3)) + 1e3).astype(np.float32)
    s = (t[:, :, [0, 1, 2, 0]] * 2 + g.normal(size=(1, 4000, 4)).astype(np.float32) * 0.01).astype(np.float32)
    acc = CorrAccumulator()
    for i in range(0, 4000, 512):
        acc.update(torch.from_numpy(t[:, i : i + 512]), torch.from_numpy(s[:, i : i + 512]))
    ref = numpy_corr(t[0].astype(np.float64), s[0].astype(np.float64))
    np.testing.assert_allclose(acc.corr()[0].numpy(), ref, atol=1e-9)


def test_layer_stats_brute_force():
    g = torch.Generator().manual_seed(0)
    corr = torch.rand(2, 5, 8, generator=g, dtype=torch.float64) * 2 - 1
    active = torch.tensor([[True] * 5, [True, True, False, True, True]])
    st = layer_stats(corr, active)
    assert st.teacher_counts.shape == (2, 5, len(SPEC_THRESHOLDS))
    for s in range(2):
        for j in range(5):
            row = corr[s, j].tolist()
            assert st.teacher_best[s, j] == max(row)
            assert st.teacher_best_student[s, j] == row.index(max(row))
            for i, thr in enumerate(SPEC_THRESHOLDS):
                assert st.teacher_counts[s, j, i] == sum(v > thr for v in row)
        for k in range(8):
            col = corr[s, :, k].tolist()
            assert st.student_best[s, k] == max(col) and st.student_best_teacher[s, k] == col.index(max(col))
    rm = rho_mean(st)
    assert rm[0] == pytest.approx(corr[0].max(1).values.mean().item())
    assert rm[1] == pytest.approx(corr[1].max(1).values[[0, 1, 3, 4]].mean().item())


@pytest.mark.parametrize("loss", ["half_sse", "mse"])
@pytest.mark.parametrize("batchnorm", ["none", "before"])
def test_full_batch_grad_norms_match_per_seed_autograd(batchnorm, loss):
    """grad_norm_l is of the training objective: half_sse = 1/2 sum over outputs, mean over samples; mse = (2/C) of it."""
    from studentspec.mlp.evaluate import evaluate, grad_norms
    from studentspec.mlp.nets import Net, make_batchnorms

    g = torch.Generator().manual_seed(0)
    dims = [4, 5, 3, 2]
    W = [torch.randn(2, a, b, generator=g, dtype=torch.float64) for a, b in zip(dims[:-1], dims[1:])]
    b = [torch.randn(2, n, generator=g, dtype=torch.float64) for n in dims[1:]]
    norms = make_batchnorms(2, [5, 3], False, torch.float64) if batchnorm != "none" else []
    net = Net(W, b, "leaky_relu", 0.1, batchnorm, norms)
    x, y = torch.randn(2, 37, 4, generator=g, dtype=torch.float64), torch.randn(2, 37, 2, generator=g, dtype=torch.float64)
    got = grad_norms(net, x, y, loss, chunk=10)
    for s in range(2):
        params = [p[s].clone().requires_grad_(True) for p in net.parameters()]
        h = x[s]
        for l in range(3):
            h = h @ params[2 * l] + params[2 * l + 1]
            if l < 2:
                if batchnorm == "before":
                    h = (h - norms[l].running_mean[s]) / torch.sqrt(norms[l].running_var[s] + 1e-5)
                h = torch.nn.functional.leaky_relu(h, 0.1)
        objective = 0.5 * (h - y[s]).square().sum(1).mean() if loss == "half_sse" else torch.nn.functional.mse_loss(h, y[s])
        grads = torch.autograd.grad(objective, params)
        for l in range(3):
            ref = (grads[2 * l].square().sum() + grads[2 * l + 1].square().sum()).sqrt()
            assert got[s, l].item() == pytest.approx(ref.item(), rel=1e-10)
    if batchnorm == "none":
        teacher = Net([w.clone() for w in W], [v + 0.1 for v in b], "leaky_relu", 0.1)
        res = evaluate(teacher, net, x, y, loss_kind=loss, chunk=10, with_grad=True)
        torch.testing.assert_close(res.grad_norm, got, rtol=1e-10, atol=0)


# ---------------------------------------------------------------- the metric contract, from outside the package

TINY = ["input_dim=6", "output_dim=4", "teacher.widths=[3]", "student.multi=2", "data.n_train=120", "data.n_eval=100",
        "train.steps_per_epoch=20", "train.epochs=2", "train.lr=0.05", "seeds=[1,2]"]


def _dead(ctx: Context) -> list[torch.Tensor]:
    """Per hidden layer, the student nodes with no correlation to any teacher on the first split (dead ones), [S]."""
    return [(~(ls.corr != 0).any(dim=1)).sum(dim=1) for ls in ctx.points[ctx.first].layers]


def _dead_columns(value: list[torch.Tensor], point, rows: Rows) -> None:
    for l, v in enumerate(value, start=1):
        rows.scalars[f"dead_students_{l}"] = v.numpy()


def _dead_table(cfg, teacher, measured: list[tuple[int, list[torch.Tensor]]], earlier: pd.DataFrame | None) -> pd.DataFrame:
    new = pd.DataFrame([{"seed": seed, "step": step, "layer": l, "dead": int(v[i])}
                        for step, value in measured for l, v in enumerate(value, start=1) for i, seed in enumerate(cfg.seeds)])
    return new if earlier is None else pd.concat([earlier, new], ignore_index=True)


def _dead_figure(run):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    t = run.table("dead")
    ax.plot(t["step"], t["dead"], "o")
    return fig


DEAD = EvalMetric(
    name="dead", title="the dead student counts", switch=None, measure=_dead,
    columns=Columns(_dead_columns, scalars=("dead_students_*",)),
    table=Table("dead", {"seed": "integer", "step": "integer", "layer": "integer", "dead": "integer"}, _dead_table,
                bytes_per_eval=lambda cfg: 100 * len(cfg.seeds)),
    figure=Figure("dead", _dead_figure, "Dead student nodes per evaluation."))


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> MetricRegistry:
    """The package's METRICS, put back as they were after the test."""
    monkeypatch.setattr(METRICS, "_entries", dict(METRICS._entries))
    return METRICS


def test_a_metric_defined_outside_the_package_is_one_registration(registry: MetricRegistry, tmp_path) -> None:
    registry.register(DEAD)  # the one call: measured, stored (its column and its table), drawn, captioned, counted
    cfg = pipelines.load_config(None, TINY)
    run = load_run(pipelines.write_run(pipelines.train(cfg, progress=False), tmp_path / "run"))
    assert run.table_names == ["scalars", "teachers", "students", "dead"] and (tmp_path / "run" / "dead.parquet").is_file()
    train_rows = run.scalars[run.scalars["split"] == "train"]
    assert len(train_rows) == 2 * 3 and train_rows["dead_students_1"].between(0, 6).all()
    assert run.scalars[run.scalars["split"] == "eval"]["dead_students_1"].isna().all()  # measured on the first split only
    dead = run.table("dead")
    assert sorted(set(dead["step"])) == [0, 20, 40] and len(dead) == 3 * 2
    merged = dead.merge(train_rows, on=["seed", "step"])
    assert (merged["dead"] == merged["dead_students_1"]).all()
    assert {p.name for p in plot_run(run, tmp_path / "figs")} >= {"dead.png", "dead.pdf"}
    assert run_captions()["dead"] == "Dead student nodes per evaluation."
    assert estimate(cfg, registry.values())["metric tables"] == 3 * 100 * 2


def test_a_metric_declared_in_the_package_but_missing_from_the_list_is_an_error(registry: MetricRegistry,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    unlisted = types.ModuleType("studentspec.mlp.unlisted")
    unlisted.METRIC = EvalMetric("unlisted", "a metric nobody listed", "eval.grad_norm", _dead)
    with pytest.raises(ValueError, match="metric 'unlisted' of studentspec.mlp.unlisted is not in the list of metrics"):
        check_listed(registry, [unlisted])
    monkeypatch.setitem(sys.modules, unlisted.__name__, unlisted)  # loaded, as an import of it would
    with pytest.raises(ValueError, match="'unlisted' .* is not in the list"):
        registry.enabled(load_config(None, TINY))
    registry.register(unlisted.METRIC)
    assert [m.name for m in registry.enabled(load_config(None, [*TINY, "eval.grad_norm=true"]))] == ["unlisted"]


def test_every_metric_declared_in_the_package_is_listed() -> None:
    modules = [importlib.import_module(m.name) for m in pkgutil.walk_packages(studentspec.__path__, "studentspec.")]
    check_listed(METRICS, modules)
    declared = {v.name for m in modules for v in vars(m).values() if isinstance(v, EvalMetric)}
    assert declared == set(METRICS.names()) == {"theory", "order"}


def test_an_unknown_metric_name_switch_or_table_is_an_error(registry: MetricRegistry, tmp_path) -> None:
    with pytest.raises(KeyError, match=r"unknown per-evaluation metric 'nope' \(known: theory, order\)"):
        registry.get("nope")
    with pytest.raises(ValueError, match="metric switch 'eval.ordr': not a true/false key"):
        EvalMetric("x", "x", "eval.ordr", _dead)
    with pytest.raises(ValueError, match="metric switch 'evl.order': 'evl' is not a section"):
        EvalMetric("x", "x", "evl.order", _dead)
    with pytest.raises(ValueError, match="metric switch 'eval.threshold': not a true/false key"):
        EvalMetric("x", "x", "eval.threshold", _dead)
    with pytest.raises(ValueError, match="table name 'converge_hessian'"):
        Table("converge_hessian", {"seed": "integer", "step": "integer"}, _dead_table, lambda cfg: 0)
    with pytest.raises(ValueError, match="seed and step"):
        Table("mine", {"seed": "integer"}, _dead_table, lambda cfg: 0)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(METRICS.get("order"))
    twin = EvalMetric("twin", "x", None, _dead, table=DEAD.table)
    registry.register(DEAD)
    with pytest.raises(ValueError, match="metric 'twin': table 'dead' is already stored by metric 'dead'"):
        registry.register(twin)
    run = load_run(pipelines.write_run(pipelines.train(pipelines.load_config(None, TINY), progress=False), tmp_path / "run"))
    with pytest.raises(StoreError, match="nope.parquet: missing"):
        run.table("nope")


def test_a_metric_adding_a_column_it_does_not_declare_is_an_error(registry: MetricRegistry) -> None:
    def sneaky(value, point, rows: Rows) -> None:
        _dead_columns(value, point, rows)
        rows.students[0]["surprise"] = 1.0

    registry.register(EvalMetric("sneaky", "x", None, _dead, columns=Columns(sneaky, scalars=("dead_students_*",))))
    result = pipelines.train(pipelines.load_config(None, TINY), progress=False)
    with pytest.raises(ValueError, match="metric 'sneaky' added column 'surprise' to students"):
        pipelines.record(result)


def test_image_configs_refuse_every_switched_on_metric_and_full_batch() -> None:
    from studentspec.config import ConfigError
    from studentspec.ensemble.optimizers import full_batch

    assert full_batch("gd") and not full_batch("sgd") and not full_batch("adam")
    for key, what in (("eval.order=true", "eval.order: the weight-space order parameters"),
                      ("theory.enabled=true", "theory.enabled: the Lemma's diagnostics"),
                      ("train.optimizer=gd", "train.optimizer: gd .full batch. is not supported")):
        with pytest.raises(ConfigError, match=what):
            pipelines.load_config(None, ["data.kind=cifar10", "data.root=/nowhere", key])
