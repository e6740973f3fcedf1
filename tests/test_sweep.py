"""Sweeps: grid grammar, local execution, resume, one store over all jobs."""

import pandas as pd
import pytest
import yaml

from studentspec import ConfigError, load_config, load_run
from studentspec.cli import main
from studentspec.sweep.grid import SweepOptions, expand, load_sweep, parse_grid, run_sweep, split_values

BASE = ["input_dim=5", "output_dim=3", "data.n_train=60", "data.n_eval=30", "train.epochs=1", "train.steps_per_epoch=5"]


def test_split_values_respects_brackets():
    assert split_values("1,2,3") == ["1", "2", "3"]
    assert split_values("[10,20],[5]") == ["[10,20]", "[5]"]
    assert split_values("{0: 0.1, 5: 0.01},0.2") == ["{0: 0.1, 5: 0.01}", "0.2"]


def test_expand_grid_and_ensemble_split():
    grid = parse_grid(["student.multi=1,2", "teacher.widths=[2],[3]", "seeds=[1,2,3]", *BASE])
    jobs = expand(None, grid, ensemble_size=2)
    assert len(jobs) == 2 * 2 * 2 and len({j.id for j in jobs}) == 8
    assert [j.seeds for j in jobs[:2]] == [[1, 2], [3]]
    assert {j.point["teacher.widths"] for j in jobs} == {"[2]", "[3]"}


@pytest.mark.parametrize("items,match", [(["bogus=1,2"], "bogus"), (["student.multi=1,"], "empty value"), (["student.multi=0,1"], "student.multi")])
def test_bad_grid_is_a_config_error(items, match):
    with pytest.raises(ConfigError, match=match):
        expand(None, parse_grid(items), None)


def test_local_sweep_resume_and_load(tmp_path, capsys):
    out = tmp_path / "sw"
    items = ["student.multi=1,2", "seeds=[1,2]", *BASE]
    first = run_sweep(None, items, out, SweepOptions(ensemble_size=1, workers=2, progress=False))
    assert len(first["done"]) == 4 and not first["failed"]
    again = run_sweep(None, items, out, SweepOptions(ensemble_size=1, workers=2, progress=False))
    assert again["done"] == [] and len(again["skipped"]) == 4
    tables = load_sweep(out)
    sc = tables["scalars"]
    assert set(sc["student.multi"]) == {1, 2} and set(sc["seed"]) == {1, 2} and sc["job"].nunique() == 4
    # a job's numbers equal the same seed trained alone with the same config
    alone = load_run(out / "jobs" / first["done"][0])
    assert len(alone.scalars) > 0
    with pytest.raises(Exception, match="another sweep"):
        run_sweep(None, ["student.multi=3", *BASE], out, SweepOptions(progress=False))
    assert main(["sweep", "configs/two_layer_quick.yaml", "student.multi=3", *BASE, "--out", str(out), "--quiet"]) == 2
    assert main(["sweep", "configs/two_layer_quick.yaml", "student.multi=1,2", "--dry-run", "--out", str(tmp_path / "dry")]) == 0
    assert "2 jobs" in capsys.readouterr().out and not (tmp_path / "dry").exists()


def test_sweep_job_equals_single_run(tmp_path):
    out = tmp_path / "sw"
    items = ["seeds=[4,5]", *BASE]
    run_sweep(None, items, out, SweepOptions(ensemble_size=2, progress=False))
    from studentspec import train

    direct = train(load_config(None, ["seeds=[4,5]", *BASE]), progress=False)
    job = load_sweep(out)["scalars"]
    from studentspec.mlp.record import tables

    ref = tables(direct)[0]
    assert len(ref) == 2 * 2 * 2 and job["mse"].tolist() == ref["mse"].tolist()  # 2 evaluations x 2 splits x 2 seeds


def test_sweep_killed_repeatedly_resumes_to_identical_results(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    items = ["student.multi=1,2,3", "seeds=[1,2]", "input_dim=5", "output_dim=3", "data.n_train=200", "data.n_eval=100",
             "train.epochs=4", "train.steps_per_epoch=300"]
    reference = tmp_path / "ref"
    run_sweep(None, items, reference, SweepOptions(ensemble_size=1, progress=False))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-c", "import sys; from studentspec.sweep.grid import SweepOptions, run_sweep; "
           "run_sweep(None, sys.argv[2:], sys.argv[1], SweepOptions(ensemble_size=1, progress=False))", str(out), *items]
    finished_before: set[str] = set()
    for delay in (1.5, 2.5, 3.5):
        proc = subprocess.Popen(cmd, start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # pathlib's glob matches dot names too: a staging dir (.ID.partial-*) with its summary is not a finished job
        done = {p.name for p in (out / "jobs").glob("*") if not p.name.startswith(".") and (p / "summary.json").is_file()} if (out / "jobs").exists() else set()
        assert finished_before <= done  # nothing finished is lost
        mtimes = {name: (out / "jobs" / name / "summary.json").stat().st_mtime for name in done}
        finished_before = done
    last = run_sweep(None, items, out, SweepOptions(ensemble_size=1, progress=False))
    assert set(last["skipped"]) == finished_before and not last["failed"]
    assert all((out / "jobs" / n / "summary.json").stat().st_mtime == t for n, t in mtimes.items())  # not redone
    assert not list((out / "jobs").glob(".*"))  # no staging leftovers
    got, ref = load_sweep(out)["scalars"], load_sweep(reference)["scalars"]
    key = ["student.multi", "seed", "step", "split"]
    assert got.sort_values(key)["mse"].tolist() == ref.sort_values(key)["mse"].tolist()


def test_query_sql_over_a_sweep(tmp_path, capsys):
    out = tmp_path / "sw"
    run_sweep(None, ["student.multi=1,2", "seeds=[1,2]", *BASE], out, SweepOptions(progress=False))
    from studentspec.sweep.grid import query

    df = query(out, 'SELECT "student.multi" AS multi, count(*) AS n, avg(mse) AS mse FROM scalars GROUP BY 1 ORDER BY 1')
    assert df["multi"].tolist() == [1, 2] and df["n"].tolist() == [8, 8]
    sc = load_sweep(out)["scalars"]
    assert df["mse"].tolist() == pytest.approx(sc.groupby("student.multi")["mse"].mean().tolist())
    assert main(["query", str(out), "SELECT max(best_corr) AS best FROM teachers"]) == 0
    assert "best" in capsys.readouterr().out
    assert main(["query", str(out), "SELECT nope FROM scalars"]) == 2
    assert capsys.readouterr().err.startswith("studentspec: error: query:")


def test_yaml_sweep_section_grid_and_zip(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "seeds: [1]\n"
        "input_dim: 5\n"
        "output_dim: 3\n"
        "data: {n_train: 40, n_eval: 20}\n"
        "train: {epochs: 1, steps_per_epoch: 3}\n"
        "sweep:\n"
        "  grid:\n"
        "    teacher.widths: [[2], [3, 2]]\n"
        "  zip:\n"
        "    student.multi: [1, 2]\n"
        "    train.lr: [{0: 0.1, 1: 0.05}, 0.02]\n"
    )
    jobs = run_sweep(str(cfg), [], tmp_path / "sw", SweepOptions(dry_run=True))["jobs"]
    points = [(j.point["teacher.widths"], j.point["student.multi"], j.point["train.lr"]) for j in jobs]
    assert points == [("[2]", "1", "{0: 0.1, 1: 0.05}"), ("[2]", "2", "0.02"), ("[3, 2]", "1", "{0: 0.1, 1: 0.05}"), ("[3, 2]", "2", "0.02")]
    assert load_config(str(cfg)).seeds == [1]  # `run` ignores the sweep section
    res = run_sweep(str(cfg), ["teacher.widths=[2]"], tmp_path / "sw2", SweepOptions(progress=False))
    assert len(res["done"]) == 2 and not res["failed"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep:\n  zip:\n    student.multi: [1, 2]\n    train.lr: [0.1]\n")
    with pytest.raises(ConfigError, match="same length"):
        run_sweep(str(bad), [], tmp_path / "sw3", SweepOptions(dry_run=True))


def test_dict_and_list_valued_swept_keys_round_trip_exactly(tmp_path):
    """lr schedules swept as dicts: each row carries its own job's schedule (pandas once aligned the dict with the index)."""
    import studentspec

    out = tmp_path / "sw"
    items = ["train.lr={0: 0.1, 1: 0.05},{0: 0.2}", "teacher.widths=[2],[3]", "seeds=[1]", *BASE]
    assert not run_sweep(None, items, out, SweepOptions(progress=False))["failed"]
    sc = studentspec.load_sweep(out)["scalars"]  # exported at the top level
    for job, rows in sc.groupby("job"):
        cfg = load_run(out / "jobs" / job).config
        lr, widths = rows["train.lr"].unique(), rows["teacher.widths"].unique()
        assert len(lr) == 1 and yaml.safe_load(lr[0]) == cfg.train.lr
        assert len(widths) == 1 and yaml.safe_load(widths[0]) == cfg.teacher.widths
    assert {yaml.safe_load(v)[0] for v in sc["train.lr"]} == {0.1, 0.2}


def test_query_reads_only_the_sweep(tmp_path, capsys):
    """The query's SQL cannot read or write files, nor switch that off again; an empty sweep says so."""
    out = tmp_path / "sw"
    run_sweep(None, ["student.multi=1,2", "seeds=[1]", *BASE], out, SweepOptions(progress=False))
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    for sql in (f"COPY scalars TO '{tmp_path / 'leak.csv'}'", f"SELECT * FROM read_csv('{secret}')",
                f"SELECT * FROM read_parquet('{next((out / 'jobs').iterdir()) / 'scalars.parquet'}')",
                "SET enable_external_access = true"):
        assert main(["query", str(out), sql]) == 2, sql
        err = capsys.readouterr().err
        assert err.startswith("studentspec: error: query:") and err.count("\n") == 1, err
    assert not (tmp_path / "leak.csv").exists()
    assert main(["query", str(out), 'SELECT count(DISTINCT job) AS n FROM students']) == 0
    assert capsys.readouterr().out.split()[-1] == "2"
    empty = tmp_path / "empty"
    run_sweep(None, ["student.multi=1", "seeds=[1]", *BASE], empty, SweepOptions(progress=False))
    for job in (empty / "jobs").iterdir():
        (job / "summary.json").unlink()
    assert main(["query", str(empty), "SELECT 1"]) == 2
    assert "no finished job" in capsys.readouterr().err


def test_a_second_sweep_into_a_locked_dir_exits_2_naming_the_holder(tmp_path, capsys):
    import subprocess
    import sys
    import time

    out = tmp_path / "sw"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from studentspec.sweep.grid import _lock\n"
        "from studentspec.store import claim_resumable\n"
        f"out = Path({str(out)!r}); claim_resumable(out, 'sweep')\n"
        "with _lock(out):\n    print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["sweep", "configs/two_layer_quick.yaml", "student.multi=1", "seeds=[1]", *BASE, "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "another sweep is running" in err and f"pid {holder.pid}" in err and err.count("\n") == 1
        assert not (out / "sweep.json").exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)  # the OS releases a killed holder's lock: the sweep now runs
    assert main(["sweep", "configs/two_layer_quick.yaml", "student.multi=1", "seeds=[1]", *BASE, "--out", str(out), "--quiet"]) == 0


def test_the_same_config_by_another_path_is_the_same_sweep(tmp_path, monkeypatch):
    import shutil

    cfg = tmp_path / "c.yaml"
    shutil.copy("configs/two_layer_quick.yaml", cfg)
    out = tmp_path / "sw"
    items = ["student.multi=1", "seeds=[1]", *BASE]
    assert len(run_sweep(str(cfg), items, out, SweepOptions(progress=False))["done"]) == 1
    monkeypatch.chdir(tmp_path)
    again = run_sweep("./c.yaml", items, out, SweepOptions(progress=False))
    assert again["done"] == [] and len(again["skipped"]) == 1


def test_a_corrupt_job_is_redone_and_the_rest_kept(tmp_path):
    out = tmp_path / "sw"
    items = ["student.multi=1,2", "seeds=[1]", *BASE]
    first = run_sweep(None, items, out, SweepOptions(progress=False))
    ref = load_sweep(out)["scalars"].sort_values(["job", "step", "split"]).reset_index(drop=True)
    broken = out / "jobs" / first["done"][0] / "scalars.parquet"
    broken.write_bytes(broken.read_bytes()[:50])  # truncated
    again = run_sweep(None, items, out, SweepOptions(progress=False))
    assert again["done"] == [first["done"][0]] and again["skipped"] == [first["done"][1]]
    got = load_sweep(out)["scalars"].sort_values(["job", "step", "split"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, ref)
