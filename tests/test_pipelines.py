"""The pipeline seam and the extension points: one table picks the pipeline, the store writes RunRecords, and adding
a data kind is one registration (a per-evaluation metric: tests/test_metrics.py) (objective: the paper's half_sse,
the config default)."""

import numpy as np
import pandas as pd
import pytest
import torch

from studentspec import ConfigError, StoreError, load_config, load_run, pipelines, train, write_run
from studentspec.cli import main
from studentspec.ensemble.registry import Registry
from studentspec.mlp import data as mlp_data
from studentspec.store import RunRecord, write_record

TINY = ["input_dim=6", "output_dim=4", "teacher.widths=[3]", "student.multi=2", "data.n_train=120", "data.n_eval=100",
        "train.steps_per_epoch=20", "train.epochs=2", "train.lr=0.05", "seeds=[1,2]"]


def test_the_data_kind_picks_the_pipeline():
    plain = [k for k in mlp_data.KINDS.names() if k not in ("cifar10", "mnist", "fashion_mnist", "gaussian_like")]
    assert {pipelines.name_of(load_config(None, [f"data.kind={k}"])) for k in plain} == {"mlp"}
    for kind in ("cifar10", "mnist", "fashion_mnist"):
        cfg = load_config(None, [f"data.kind={kind}", "data.root=/nowhere"])
        assert pipelines.name_of(cfg) == "conv" and pipelines.PIPELINES["conv"].build.__module__ == "studentspec.conv.train"
        # teacher.net: mlp puts the same image set through the MLP pipeline (flattened images)
        assert pipelines.name_of(cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"net": "mlp"})})) == "mlp"
    assert pipelines.PIPELINES["mlp"].build.__module__ == "studentspec.mlp.train"
    with pytest.raises(ConfigError, match=r"^teacher.net: conv runs on an image data set"):
        load_config(None, ["teacher.net=conv", "data.kind=uniform"])


def test_an_unknown_data_kind_is_a_config_error_naming_every_known_kind():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.kind=spherical"])
    msg = str(err.value)
    assert msg.startswith("data.kind: must be one of") and "'spherical'" in msg
    for kind in ("gaussian", "uniform", "online", "teacher_aware", "cifar10", "mnist"):
        assert repr(kind) in msg


def test_pipeline_specific_checks_run_before_any_work():
    with pytest.raises(ConfigError, match="^data.root: data.kind=cifar10 needs the path of its files"):
        load_config(None, ["data.kind=cifar10"])
    with pytest.raises(ConfigError, match="theory.enabled: .*not image data"):
        load_config(None, ["data.kind=cifar10", "data.root=/x", "theory.enabled=true"])
    with pytest.raises(ConfigError, match="eval.order: .*not image data"):
        load_config(None, ["data.kind=cifar10", "data.root=/x", "eval.order=true"])
    with pytest.raises(ConfigError, match="teacher.checkpoint: a conv teacher needs image data"):
        load_config(None, ["teacher.checkpoint=T.pt"])


@pytest.mark.parametrize("what,module", [("converge", "studentspec.theory.converge"), ("population", "studentspec.theory.population"),
                                         ("the cost estimate", "studentspec.sweep.cost")])
def test_commands_declare_their_pipelines_and_refuse_the_others(what, module):
    import importlib

    supported = importlib.import_module(module).PIPELINES
    assert supported == ("mlp",)
    cfg = load_config(None, ["data.kind=cifar10", "data.root=/x"])
    with pytest.raises(ConfigError, match=f"{what} supports mlp runs, not conv runs"):
        pipelines.require(cfg, supported, what)
    pipelines.require(load_config(None, []), supported, what)  # an MLP config passes


def test_dry_run_of_an_image_sweep_exits_2_with_one_line(tmp_path, capsys):
    cfg = tmp_path / "img.yaml"
    cfg.write_text("data: {kind: cifar10, root: /nowhere}\nseeds: [1]\n")
    assert main(["sweep", str(cfg), "student.multi=1,2", "--out", str(tmp_path / "sw"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cost estimate" in err[0] and "not conv runs" in err[0]


def test_a_run_record_round_trips_through_the_store(tmp_path):
    result = train(load_config(None, TINY), progress=False)
    rec = pipelines.record(result)
    assert set(rec.tables) == {"scalars", "teachers", "students"} and rec.summary["pipeline"] == "mlp"
    run = load_run(write_record(rec, tmp_path / "run"))
    for name in rec.tables:
        assert getattr(run, name).equals(rec.tables[name])
    assert set(run.weights()) == set(rec.arrays) and all(np.array_equal(run.weights()[k], v) for k, v in rec.arrays.items())
    with pytest.raises(ValueError, match="tables"):
        write_record(RunRecord(rec.config, {"scalars": rec.tables["scalars"]}, {}, {}), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_the_store_reads_a_record_it_did_not_get_from_a_pipeline(tmp_path):
    """The store knows no pipeline: any RunRecord with the three tables is a run dir."""
    cfg = load_config(None, ["seeds=[5]"])
    frame = pd.DataFrame({"seed": [5], "step": [0], "split": ["eval"]})
    frame = frame.assign(mse=[0.5], layer=[1], teacher=[0], student=[0], best_corr=[0.9], fanout_norm=[1.0], specialized=[False])
    summary = {"seeds": [5], "steps": 0, "wall_time_s": 0.0, "diverged": {}, "per_seed": {}, "n": 1}
    arrays = {"teacher.W1": np.arange(3.0)[None], "student.W1": np.arange(3.0)[None]}
    path = write_record(RunRecord(cfg, {"scalars": frame, "teachers": frame, "students": frame}, arrays, summary), tmp_path / "r")
    run = load_run(path)
    assert run.summary == {**summary, "tables": ["scalars", "teachers", "students"]} and run.config.seeds == [5]
    assert np.array_equal(run.weights()["student.W1"], np.arange(3.0)[None])
    with pytest.raises(StoreError):
        write_record(RunRecord(cfg, {"scalars": frame, "teachers": frame, "students": frame}, {}, {}), tmp_path / "r")


def _sphere(g: torch.Generator, n: int, cfg, *, w, b, training: bool, out=None) -> torch.Tensor:  # out: may be ignored
    x = torch.randn(n, cfg.input_dim, generator=g, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True) * (cfg.data.std * cfg.input_dim**0.5)


def test_a_new_data_kind_is_one_registration(monkeypatch, tmp_path):
    """Inputs on the sphere of radius std sqrt(d): registered from outside the package, it trains and is stored."""
    monkeypatch.setitem(mlp_data.KINDS._entries, "sphere", mlp_data.DataKind("sphere", _sphere))
    cfg = load_config(None, [*TINY, "data.kind=sphere"])
    result = train(cfg, progress=False)
    radius = cfg.data.std * cfg.input_dim**0.5
    torch.testing.assert_close(result.setup.stream.x_train.norm(dim=2), torch.full((2, 120), radius, dtype=torch.float64))
    torch.testing.assert_close(result.setup.x_eval.norm(dim=2), torch.full((2, 100), radius, dtype=torch.float64))
    assert load_run(write_run(result, tmp_path / "run")).config.data.kind == "sphere"


def test_the_registry_refuses_a_second_entry_and_names_the_known_ones():
    reg = Registry("widget")
    entry = mlp_data.DataKind("a", _sphere)
    reg.register(entry)
    with pytest.raises(ValueError, match="already registered"):
        reg.register(entry)
    with pytest.raises(KeyError, match=r"unknown widget 'b' \(known: a\)"):
        reg.get("b")
    assert reg.one_of() == "must be one of 'a'"


def test_on_eval_gets_the_same_evaluation_from_an_mlp_run_and_a_conv_run(tmp_path):
    """hooks.on_eval receives an ensemble.hooks.Evaluation from both pipelines: before training (step 0, epoch 0), after
    every eval.every epochs and after the last (steps_per_epoch x epochs), holding the run's own records of it (mlp: the
    train then eval EvalPoint, conv: one ConvPoint) and a summary of formatted numbers."""
    from image_files import write_cifar
    from studentspec.conv.teacher import save_checkpoint, train_teacher
    from studentspec.conv.train import ConvPoint
    from studentspec.ensemble.hooks import Evaluation
    from studentspec.mlp.train import EvalPoint

    seen: dict[str, list] = {"mlp": [], "conv": []}
    mlp = train(load_config(None, TINY + ["train.epochs=5", "eval.every=2"]), False, on_eval=seen["mlp"].append)
    write_cifar(tmp_path / "data", per_batch=20, n_test=24)
    teacher = ["teacher.widths=[4,4,4,4]", "teacher.batchnorm=after", "teacher.batchnorm_affine=true", "train.threads=1"]
    ckpt = train_teacher(load_config(None, ["data.kind=cifar10", f"data.root={tmp_path / 'data'}", *teacher,
                                            "teacher_train.epochs=1", "teacher_train.batch_size=25"]), progress=False)
    save_checkpoint(ckpt, tmp_path / "T.pt")
    conv_cfg = load_config(None, ["data.kind=cifar10", f"data.root={tmp_path / 'data'}", *teacher,
                                  f"teacher.checkpoint={tmp_path / 'T.pt'}", "student.init_std=null", "seeds=[1,2]",
                                  "data.n_train=60", "data.n_eval=24", "train.batch_size=16", "train.steps_per_epoch=null",
                                  "train.epochs=3", "train.lr=0.005", "eval.every=2", "eval.batch_size=12"])
    conv = train(conv_cfg, False, on_eval=seen["conv"].append)

    for name, evs in seen.items():
        assert evs and all(type(ev) is Evaluation for ev in evs), name
        assert all(ev.summary and all(isinstance(v, str) for v in ev.summary.values()) for ev in evs), name
    # steps per epoch: mlp train.steps_per_epoch = 20; conv one pass, ceil(60 / 16) = 4
    assert [(ev.step, ev.epoch) for ev in seen["mlp"]] == [(0, 0), (40, 2), (80, 4), (100, 5)]
    assert [(ev.step, ev.epoch) for ev in seen["conv"]] == [(0, 0), (8, 2), (12, 3)]
    for ev in seen["mlp"]:
        assert [type(p) for p in ev.points] == [EvalPoint, EvalPoint] and [p.split for p in ev.points] == ["train", "eval"]
        assert [p.step for p in ev.points] == [ev.step, ev.step] and set(ev.summary) == {"eval_mse", "specialized"}
    for ev in seen["conv"]:
        assert [type(p) for p in ev.points] == [ConvPoint] and (ev.points[0].step, ev.points[0].epoch) == (ev.step, ev.epoch)
        assert set(ev.summary) == {"acc", "rho"}
    # the hook sees the very records the result keeps, in order
    assert [p for ev in seen["mlp"] for p in ev.points] == mlp.evals
    assert [p for ev in seen["conv"] for p in ev.points] == conv.evals
