"""Config validation, the CLI's exit codes, and the run store round trip."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from studentspec import ConfigError, StoreError, load_config, load_run, write_run
from studentspec import train
from studentspec.cli import main

TINY = ["seeds=[1,2]", "input_dim=6", "output_dim=4", "teacher.widths=[3]", "student.multi=2", "data.n_train=100",
        "data.n_eval=100", "train.steps_per_epoch=10", "train.epochs=2"]


@pytest.mark.parametrize(
    "override,key",
    [
        ("bogus=1", "bogus"),
        ("teacher.colour=red", "teacher.colour"),
        ("input_dim=abc", "input_dim"),
        ("input_dim=1.5", "input_dim"),
        ("teacher.widths=[4,0]", "teacher.widths"),
        ("student.multi=0.5", "student.multi"),
        ("train.lr=0", "train.lr"),
        ("train.lr=-0.1", "train.lr"),
        ("train.lr={5: 0.1}", "train.lr"),
        ("seeds=[]", "seeds"),
        ("seeds=[1,1]", "seeds"),
        ("teacher.activation=tanh", "teacher.activation"),
        ("train.dtype=float16", "train.dtype"),
        ("data.kind=mnist", "data.root"),
        ("teacher.leaky_slope=1.5", "teacher.leaky_slope"),
        ("eval.threshold=2", "eval.threshold"),
        ("train.batch_size=0", "train.batch_size"),
        ("teacher.tune=maybe", "teacher.tune"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    msg = str(err.value)
    assert msg.startswith(key + ":") and "\n" not in msg


def test_good_overrides_are_typed():
    cfg = load_config("configs/deep.yaml", ["student.multi=5", "train.lr={0: 0.3, 10: 0.1}", "seeds=[4]"])
    assert cfg.student.multi == 5 and cfg.train.lr == {0: 0.3, 10: 0.1} and cfg.seeds == [4]
    assert cfg.student_widths == [250, 375, 500, 625] and cfg.train.steps_per_epoch is None


def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "configs/two_layer_quick.yaml", "student.multi=0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "student.multi" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_cli_run_then_plot_as_a_subprocess(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "studentspec.cli", "run", "configs/two_layer_quick.yaml", *TINY, "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr
    plot = subprocess.run([sys.executable, "-m", "studentspec.cli", "plot", str(out)], capture_output=True, text=True, timeout=300)
    assert plot.returncode == 0, plot.stderr
    assert (out / "figures" / "lshape.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    cfg = load_config(None, [*TINY, "teacher.widths=[3,4]", "train.lr={0: 0.05, 1: 0.02}"])
    result = train(cfg, progress=False)
    path = write_run(result, tmp_path_factory.mktemp("store") / "run")
    return result, path


def test_store_round_trip(stored):
    result, path = stored
    assert sorted(p.name for p in path.iterdir()) == sorted([".studentspec", "config.yaml", "scalars.parquet", "teachers.parquet", "students.parquet", "summary.json", "weights.npz"])
    run = load_run(path)
    assert run.config == result.setup.cfg
    for col in ["seed", "step", "split", "mse"]:
        assert col in run.scalars
    for col in ["seed", "step", "split", "layer", "teacher", "best_corr", "best_student", "fanout_norm", "specialized"]:
        assert col in run.teachers
    for col in ["seed", "step", "split", "layer", "student", "best_corr", "best_teacher", "fanout_norm"]:
        assert col in run.students
    # docs/model.md 2: specialized = best correlation > 0.95; counts of students above 0.5, 0.6, 0.7, 0.8, 0.9, 0.95
    assert run.config.eval.threshold == 0.95  # the default: the spec's threshold
    assert [c for c in run.teachers if c.startswith("n_above_")] == [f"n_above_{t}" for t in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)]
    assert (run.teachers.specialized == (run.teachers.best_corr > 0.95)).all() and len(run.teachers) > 0
    counts = run.teachers[[f"n_above_{t}" for t in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)]].to_numpy()
    assert (counts[:, :-1] >= counts[:, 1:]).all() and ((counts[:, -1] > 0) == run.teachers.specialized.to_numpy()).all()
    # 3 evaluations x 2 splits x 2 seeds; teachers (3 + 4 nodes), students (6 + 8 nodes)
    assert len(run.scalars) == 12 and len(run.teachers) == 12 * 7 and len(run.students) == 12 * 14
    assert sorted(run.scalars.step.unique()) == [0, 10, 20]
    w = run.weights()
    np.testing.assert_array_equal(w["student.W2"], result.setup.student.weights[1].detach().numpy())
    np.testing.assert_array_equal(w["teacher.b1"], result.setup.teacher.biases[0].numpy())
    final = run.scalars[(run.scalars.step == 20) & (run.scalars.split == "eval")].set_index("seed")
    assert run.summary["per_seed"]["1"]["eval_mse"] == pytest.approx(final.loc[1, "mse"])
    tts = run.time_to_specialize()
    assert set(tts.columns) >= {"seed", "layer", "teacher", "time_to_specialize"} and len(tts) == 2 * 7


def test_time_to_specialize_is_first_step_above_threshold():
    from studentspec.store import time_to_specialize

    df = pd.DataFrame({"seed": 1, "layer": 1, "split": "eval", "teacher": [0, 0, 0, 1, 1, 1],
                       "step": [0, 10, 20, 0, 10, 20], "specialized": [False, True, True, False, False, False]})
    out = time_to_specialize(df).set_index("teacher")["time_to_specialize"]
    assert out[0] == 10 and np.isnan(out[1])


@pytest.mark.parametrize("victim", ["scalars.parquet", "summary.json", "config.yaml"])
def test_corrupt_or_missing_files_give_one_line_store_errors(stored, tmp_path, victim):
    import shutil

    _, path = stored
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    (copy / victim).write_bytes(b"\x00garbage{")
    with pytest.raises(StoreError, match=victim.split(".")[0]):
        load_run(copy)
    (copy / victim).unlink()
    with pytest.raises(StoreError, match="missing"):
        load_run(copy)
    assert main(["plot", str(copy)]) == 2


def test_config_yaml_is_the_resolved_config(stored):
    _, path = stored
    tree = yaml.safe_load((path / "config.yaml").read_text())
    assert tree["train"]["lr"] == {0: 0.05, 1: 0.02} and tree["teacher"]["widths"] == [3, 4]
    assert json.loads((path / "summary.json").read_text())["steps"] == 20


def test_write_run_refuses_existing_dir_and_leaves_no_partial_files(stored):
    result, path = stored
    with pytest.raises(StoreError, match="already exists"):
        write_run(result, path)
    assert not [p for p in path.parent.iterdir() if ".partial-" in p.name]


def test_json_files_are_strict_json(tmp_path):
    """summary.json, reproduce.json, ... (store.write_json): NaN and +-inf are written as null (RFC 8259 JSON)."""
    from studentspec.store import write_json

    path = tmp_path / "s.json"
    write_json(path, {"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": np.float64("-inf"), "e": 2}})
    text = path.read_text()
    loaded = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert loaded == {"a": None, "b": [1.5, None], "c": {"d": None, "e": 2}}


@pytest.mark.parametrize("override,key,word", [
    ("train.lr=.nan", "train.lr", "finite"), ("teacher.bias=.inf", "teacher.bias", "finite"), ("data.std=-.inf", "data.std", "finite"),
    ("train.lr={0: .nan}", "train.lr.0", "finite"), ("teacher.leaky_slope=.nan", "teacher.leaky_slope", "finite"),
])
def test_non_finite_values_exit_2_naming_the_key(tmp_path, capsys, override, key, word):
    assert main(["run", "configs/two_layer_quick.yaml", override, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"studentspec: error: {key}:") and word in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,word", [
    (["sweep", "configs/two_layer_quick.yaml", "student.multi=1", "--ensemble-size", "0", "--dry-run"], "--ensemble-size"),
    (["population", "configs/two_layer_quick.yaml", "teacher.bias=0", "--steps", "0"], "--steps"),
])
def test_counts_below_one_exit_2(tmp_path, capsys, args, word):
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and word in err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override,words", [
    ("train.device=banana", ["train.device", "not a torch device"]),
    ("seeds=[99999999999999999999]", ["seeds", "2**63"]),
])
def test_bad_device_and_seed_exit_2(tmp_path, capsys, override, words):
    assert main(["run", "configs/two_layer_quick.yaml", *TINY, override, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and all(w in err for w in words) and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_exits_2_before_work_but_its_config_still_loads(tmp_path, capsys):
    assert main(["run", "configs/two_layer_quick.yaml", *TINY, "train.device=cuda", "--out", str(tmp_path / "r")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
    assert load_config(None, ["train.device=cuda:1"]).train.device == "cuda:1"  # a GPU run's stored config loads anywhere


@pytest.mark.parametrize("text,words", [("- a\n", "top level must be a mapping"), ("a: [\n", "not valid YAML")])
def test_sweep_config_that_is_a_list_or_broken_yaml_exits_2(tmp_path, capsys, text, words):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    assert main(["sweep", str(cfg), "student.multi=1", "--out", str(tmp_path / "sw")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err and not (tmp_path / "sw").exists()


@pytest.mark.parametrize("text", ["a: [\n  b: {\n", "- 1\n- 2\n", "input_dim: -3\n"])
def test_corrupt_config_yaml_of_a_run_is_one_line(tmp_path, capsys, text):
    out = tmp_path / "run"
    assert main(["run", "configs/two_layer_quick.yaml", *TINY, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    (out / "config.yaml").write_text(text)
    assert main(["plot", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config.yaml" in err and "Traceback" not in err


def test_plot_of_tables_it_cannot_draw_writes_no_figure(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "configs/two_layer_quick.yaml", *TINY, "--out", str(out), "--quiet"]) == 0
    teachers = pd.read_parquet(out / "teachers.parquet").drop(columns=["active"])  # loads; the second figure needs it
    teachers.to_parquet(out / "teachers.parquet", index=False)
    capsys.readouterr()
    assert main(["plot", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot draw" in err
    assert not (out / "figures").exists()  # all or nothing
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # the figures drawn, and the one whose drawing failed, are closed


@pytest.mark.parametrize("overrides,start", [
    (["train.loss=ce", "output_dim=1"], "train.loss=ce needs output_dim >= 2"),
    (["data.kind=online", "train.optimizer=gd"], "train.optimizer=gd needs a fixed training set"),
])
def test_whole_config_errors_name_the_keys_not_the_config(tmp_path, capsys, overrides, start):
    assert main(["run", "configs/two_layer_quick.yaml", *overrides, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"studentspec: error: {start}" or (err.startswith(f"studentspec: error: {start}") and "{" not in err)
