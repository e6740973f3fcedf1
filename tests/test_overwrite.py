"""--overwrite replaces only a complete run dir studentspec wrote, by swapping; output-path problems fail before any work."""

import importlib
import os
import sys
from pathlib import Path

import pytest

from studentspec import store
from studentspec.cli import main

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "two_layer_quick.yaml")
TINY = ["seeds=[1]", "input_dim=4", "output_dim=3", "teacher.widths=[2]", "student.multi=2", "data.n_train=40",
        "data.n_eval=20", "train.steps_per_epoch=5", "train.epochs=1"]


def run(out, *extra):
    return main(["run", CONFIG, *TINY, *extra, "--out", str(out), "--quiet"])


def one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_refuses_a_folder_of_user_files(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    before = snapshot(mine)
    assert run(mine, "--overwrite") == 2
    one_line_error(capsys, "refuses", "not a complete studentspec run dir")
    assert snapshot(mine) == before


def test_overwrite_refuses_a_run_dir_holding_a_user_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(out) == 0
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    assert run(out, "--overwrite") == 2
    one_line_error(capsys, "did not write", "notes.txt")
    assert snapshot(out) == before


@pytest.mark.parametrize("where", [".", ".."])
def test_overwrite_refuses_the_working_directory_and_its_parents(tmp_path, capsys, monkeypatch, where):
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.csv").write_text("1,2")
    monkeypatch.chdir(work)
    assert run(where, "--overwrite") == 2
    one_line_error(capsys, "refuses")
    assert (work / "data.csv").read_text() == "1,2"


def test_overwrite_refuses_home(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("x")
    monkeypatch.setenv("HOME", str(home))
    assert run(home, "--overwrite") == 2
    one_line_error(capsys, "home directory")
    assert (home / ".bashrc").is_file()


def test_overwrite_replaces_our_run_dir_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "run"
    assert run(out) == 0
    first = (out / "summary.json").read_text()
    assert main(["plot", str(out)]) == 0  # figures/ is ours too
    assert run(out, "train.lr=0.02", "--overwrite") == 0
    assert (out / "summary.json").read_text() != first and "lr: 0.02" in (out / "config.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing staged or set aside is left


def test_a_failed_swap_keeps_the_old_run_complete(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert run(out) == 0
    before = snapshot(out)
    real = os.replace

    def failing(src, dst):
        if Path(src).name.startswith(".run.partial-") and Path(dst) == out:  # the new run's rename onto out
            raise OSError(5, "disk gone")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    assert run(out, "train.lr=0.02", "--overwrite") == 1
    one_line_error(capsys, "Input/output error", "unchanged")
    monkeypatch.setattr(os, "replace", real)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("case", ["parent_is_file", "out_is_file", "name_too_long"])
def test_unusable_output_paths_fail_before_training(tmp_path, capsys, monkeypatch, case):
    trained = []
    monkeypatch.setattr(importlib.import_module("studentspec.pipelines"), "train", lambda *a, **k: trained.append(1))
    if case == "parent_is_file":
        (tmp_path / "f").write_text("x")
        out, words = tmp_path / "f" / "run", ["not a directory"]
    elif case == "out_is_file":
        out, words = tmp_path / "f", ["refuses", "not a run directory"]
        out.write_text("x")
    else:
        out, words = tmp_path / ("r" * 250), ["name too long"]
    before = snapshot(tmp_path)
    assert run(out, "--overwrite") == 2
    one_line_error(capsys, *words)
    assert trained == [] and snapshot(tmp_path) == before


def test_teacher_overwrite_refuses_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    mine = tmp_path / "paper.pdf"
    mine.write_bytes(b"%PDF-1.4 mine")
    assert main(["teacher", "train", "cifar10", "--root", str(tmp_path / "nope"), "--out", str(mine), "--overwrite"]) == 2
    one_line_error(capsys, "not a studentspec teacher checkpoint")
    assert mine.read_bytes() == b"%PDF-1.4 mine"
