"""The probe corpus: bad inputs and faults as a new user would try them, one table.

Every case runs the real `studentspec` command in a fresh working directory and asserts exit code
2, a one-line message naming the cause, no traceback, and that nothing in the working directory
was written, changed or deleted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from probe import assert_refused, snapshot
from studentspec.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "two_layer_quick.yaml")
DEEP = str(ROOT / "configs" / "deep_quick.yaml")
TINY = ["seeds=[1]", "input_dim=4", "output_dim=3", "teacher.widths=[2]", "student.multi=2", "data.n_train=40",
        "data.n_eval=20", "train.steps_per_epoch=5", "train.epochs=1"]


@dataclass
class Case:
    """One probe: files to create in the working dir, the command line, words the error must contain."""

    id: str
    argv: list[str]
    words: tuple[str, ...]
    setup: Callable[[Path, Path], None] = field(default=lambda ws, run: None)  # (working dir, a finished tiny run dir)


def write(name: str, text: str | bytes) -> Callable[[Path, Path], None]:
    def make(ws: Path, run: Path) -> None:
        p = ws / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode() if isinstance(text, str) else text)
    return make


def copy_run(name: str = "run", corrupt: str | None = None, text: bytes = b"garbage") -> Callable[[Path, Path], None]:
    def make(ws: Path, run: Path) -> None:
        shutil.copytree(run, ws / name)
        if corrupt is not None:
            (ws / name / corrupt).write_bytes(text)
    return make


def both(*makers: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def make(ws: Path, run: Path) -> None:
        for m in makers:
            m(ws, run)
    return make


def held_lock(ws: Path, run: Path) -> None:
    """A sweep dir whose lock is held by this (live) process, as a running sweep holds it."""
    import filelock

    from studentspec.store import claim_resumable

    claim_resumable(ws / "sw", "sweep")  # a running sweep's dir carries its marker from the first instant
    lock = filelock.FileLock(ws / "sw" / ".sweep.lock")
    lock.acquire()
    (ws / "sw" / ".sweep.lock.holder").write_text(f"pid {os.getpid()} on this host")
    LOCKS.append(lock)


def crafted_checkpoint(ws: Path, run: Path) -> None:
    torch.save({"format": "studentspec.conv_teacher", "version": 1, "arch": {"widths": [4]}}, ws / "T.pt")


LOCKS: list = []


def run_cmd(*extra: str) -> list[str]:
    return ["run", QUICK, *TINY, *extra, "--out", "out", "--quiet"]


CASES = [
    # config files
    Case("config-missing", ["run", "nope.yaml", "--out", "out"], ("nope.yaml", "not found")),
    Case("config-is-a-dir", ["run", "cfgdir", "--out", "out"], ("cfgdir", "not found"), write("cfgdir/x", "")),
    Case("config-broken-yaml", ["run", "bad.yaml", "--out", "out"], ("bad.yaml", "not valid YAML"), write("bad.yaml", "a: [1, 2\nb: }")),
    Case("config-a-list", ["run", "list.yaml", "--out", "out"], ("list.yaml", "mapping"), write("list.yaml", "- 1\n- 2\n")),
    Case("config-binary", ["run", "bin.yaml", "--out", "out"], ("bin.yaml",), write("bin.yaml", b"\xff\xfe\x00\x81")),
    Case("config-unknown-top-key", ["run", "k.yaml", "--out", "out"], ("colour", "unknown key"), write("k.yaml", "colour: red\n")),
    Case("config-file-bad-value", ["run", "v.yaml", "--out", "out"], ("train.lr",), write("v.yaml", "train:\n  lr: -1\n")),
    # overrides: keys, types, ranges, non-finite values
    Case("override-unknown-key", run_cmd("foo=1"), ("foo", "unknown key")),
    Case("override-unknown-nested", run_cmd("train.foo=1"), ("train.foo", "unknown key")),
    Case("override-no-equals", run_cmd("train.lr"), ("train.lr", "key=value")),
    Case("override-into-a-value", run_cmd("seeds.x=1"), ("seeds.x", "not a section")),
    Case("override-wrong-type", run_cmd("train.lr=abc"), ("train.lr",)),
    Case("override-int-as-float", run_cmd("data.n_train=1e3"), ("data.n_train", "integer")),
    Case("override-unparsable", run_cmd("seeds=[1,"), ("seeds", "cannot parse")),
    Case("lr-negative", run_cmd("train.lr=-0.1"), ("train.lr", "> 0")),
    Case("lr-nan", run_cmd("train.lr=.nan"), ("train.lr",)),
    Case("lr-inf", run_cmd("train.lr=.inf"), ("train.lr",)),
    Case("lr-schedule-without-epoch-0", run_cmd("train.lr={5: 0.1}"), ("train.lr", "epoch 0")),
    Case("bias-nan", run_cmd("teacher.bias=.nan"), ("teacher.bias",)),
    Case("data-std-inf", run_cmd("data.std=.inf"), ("data.std",)),
    Case("init-std-zero", run_cmd("student.init_std=0"), ("student.init_std",)),
    Case("multi-below-1", run_cmd("student.multi=0.5"), ("student.multi",)),
    Case("width-zero", run_cmd("teacher.widths=[0]"), ("teacher.widths",)),
    Case("batch-size-zero", run_cmd("train.batch_size=0"), ("train.batch_size",)),
    Case("steps-per-epoch-zero", run_cmd("train.steps_per_epoch=0"), ("train.steps_per_epoch",)),
    Case("epochs-negative", run_cmd("train.epochs=-1"), ("train.epochs",)),
    Case("momentum-one", run_cmd("train.momentum=1"), ("train.momentum",)),
    Case("threshold-above-1", run_cmd("eval.threshold=1.5"), ("eval.threshold",)),
    Case("n-eval-one", run_cmd("data.n_eval=1"), ("data.n_eval",)),
    Case("unknown-activation", run_cmd("teacher.activation=tanh"), ("teacher.activation", "must be one of")),
    Case("unknown-data-kind", run_cmd("data.kind=sphere"), ("data.kind", "must be one of")),
    Case("unknown-optimizer", run_cmd("train.optimizer=rmsprop"), ("train.optimizer", "must be one of")),
    Case("unknown-loss", run_cmd("train.loss=hinge"), ("train.loss", "must be one of")),
    Case("unknown-dtype", run_cmd("train.dtype=float16"), ("train.dtype", "must be one of")),
    Case("ce-with-one-output", run_cmd("train.loss=ce", "output_dim=1"), ("train.loss=ce", "output_dim")),
    # the original code's knobs (docs/model.md 4.5): bad values and combinations
    Case("freeze-out-of-range", run_cmd("train.freeze=[3]"), ("train.freeze", "1..2")),
    Case("freeze-every-layer", run_cmd("train.freeze=[1,2]"), ("train.freeze", "nothing would train")),
    Case("perturb-with-multi", run_cmd("student.perturb=0.1"), ("student.perturb", "student.multi=1")),
    Case("same-dir-with-multi", run_cmd("student.same_dir=true"), ("student.same_dir", "student.multi=1")),
    Case("same-sign-with-adv-init", run_cmd("student.multi=1", "student.same_sign=true", "student.adv_init=adv"), ("student.adv_init", "same_sign")),
    Case("adv-init-unknown", run_cmd("student.adv_init=away"), ("student.adv_init", "must be one of")),
    Case("no-bias-with-tune", run_cmd("teacher.no_bias=true", "teacher.tune=true"), ("teacher.no_bias", "teacher.tune")),
    Case("lr-reduction-zero", run_cmd("train.lr_reduction=0"), ("train.lr_reduction",)),
    Case("sample-budget-not-a-multiple", run_cmd("train.sample_budget=7"), ("train.sample_budget", "multiple")),
    Case("sample-budget-vs-epochs", run_cmd("train.sample_budget=160"), ("train.sample_budget", "train.epochs=1")),
    Case("knob-with-conv-teacher", run_cmd("data.kind=cifar10", "data.root=x", "teacher.checkpoint=T.pt", "student.normalize=true"),
         ("student.normalize", "MLP runs only")),
    Case("image-data-without-root", run_cmd("data.kind=cifar10"), ("data.root",)),
    Case("image-data-without-teacher", run_cmd("data.kind=mnist", "data.root=no/such/folder"), ("teacher.checkpoint", "teacher train")),
    # seeds
    Case("seeds-empty", run_cmd("seeds=[]"), ("seeds",)),
    Case("seeds-repeated", run_cmd("seeds=[1,1]"), ("seeds", "distinct")),
    Case("seed-negative", run_cmd("seeds=[-1]"), ("seeds", "2**63")),
    Case("seed-too-large", run_cmd("seeds=[9223372036854775808]"), ("seeds", "2**63")),
    # devices and memory
    Case("device-bad-syntax", run_cmd("train.device=gpu0"), ("train.device",)),
    Case("device-unsupported-type", run_cmd("train.device=meta"), ("train.device", "not supported")),
    Case("device-cuda-absent", run_cmd("train.device=cuda"), ("train.device", "CUDA")),
    Case("does-not-fit-in-memory", run_cmd("seeds=[1,2,3,4,5,6,7,8]", "data.n_train=1000000000"), ("needs at least", "GiB")),
    # output paths
    Case("out-exists", run_cmd(), ("out", "already exists"), write("out/notes.txt", "mine")),
    Case("overwrite-user-folder", run_cmd("--overwrite"), ("out", "not a complete studentspec run dir"), write("out/notes.txt", "mine")),
    Case("overwrite-run-with-user-file", run_cmd("--overwrite"), ("did not write", "notes.txt"),
         both(copy_run("out"), write("out/notes.txt", "mine"))),
    Case("overwrite-working-dir", ["run", QUICK, *TINY, "--out", ".", "--overwrite", "--quiet"], ("working directory",), write("data.csv", "1,2")),
    Case("out-parent-is-a-file", ["run", QUICK, *TINY, "--out", "f/run", "--quiet"], ("not a directory",), write("f", "x")),
    Case("out-is-a-file", ["run", QUICK, *TINY, "--out", "f", "--overwrite", "--quiet"], ("not a run directory",), write("f", "x")),
    Case("out-name-too-long", ["run", QUICK, *TINY, "--out", "x" * 240, "--quiet"], ("name too long",)),
    Case("steps-zero", ["population", QUICK, "teacher.bias=0", "--steps", "0", "--out", "p"], ("--steps",)),
    # stored runs
    Case("plot-missing-dir", ["plot", "nothing"], ("nothing", "not found")),
    Case("plot-corrupt-summary", ["plot", "run"], ("summary.json", "corrupt"), copy_run(corrupt="summary.json")),
    Case("plot-corrupt-parquet", ["plot", "run"], ("scalars.parquet",), copy_run(corrupt="scalars.parquet")),
    Case("plot-corrupt-config", ["plot", "run"], ("config.yaml",), copy_run(corrupt="config.yaml", text=b"train: [")),
    Case("plot-missing-file", ["plot", "run"], ("teachers.parquet", "missing"),
         both(copy_run(), lambda ws, run: (ws / "run" / "teachers.parquet").unlink())),
    Case("converge-missing-dir", ["converge", "nothing"], ("nothing", "not found")),
    Case("converge-corrupt-weights", ["converge", "run"], ("weights.npz",), copy_run(corrupt="weights.npz")),
    # population
    Case("population-deep-recipe", ["population", DEEP, "--out", "p"], ("population",)),
    Case("population-ce", ["population", QUICK, "teacher.bias=0", "train.loss=ce", "--out", "p"], ("train.loss",)),
    Case("population-out-exists", ["population", QUICK, "--out", "p"], ("p", "already exists"), write("p/mine.txt", "x")),
    Case("plot-into-a-folder-of-files", ["plot", "run", "--out", "mine"], ("mine", "not a figure folder"),
         both(copy_run(), write("mine/thesis.tex", "years"))),
    Case("reproduce-into-a-folder-of-files", ["reproduce", "deep", "--scale", "tiny", "--out", "mine"], ("mine", "not a reproduce dir"),
         write("mine/thesis.tex", "years")),
    Case("reproduce-cifar-into-a-folder-of-files", ["reproduce", "cifar10", "--out", "mine"], ("mine", "not a reproduce dir"),
         write("mine/thesis.tex", "years")),
    Case("reproduce-out-is-a-file", ["reproduce", "deep", "--scale", "tiny", "--out", "f"], ("f", "not a directory"), write("f", "x")),
    # sweeps and queries
    Case("sweep-into-a-folder-of-files", ["sweep", QUICK, *TINY, "--out", "mine", "--quiet"], ("mine", "not a sweep dir"),
         write("mine/thesis.tex", "years")),
    Case("sweep-out-is-a-file", ["sweep", QUICK, *TINY, "--out", "f", "--quiet"], ("f", "not a directory"), write("f", "x")),
    Case("sweep-config-a-list", ["sweep", "list.yaml", "--out", "sw"], ("list.yaml", "mapping"), write("list.yaml", "- 1\n")),
    Case("sweep-broken-yaml", ["sweep", "bad.yaml", "--out", "sw"], ("bad.yaml", "not valid YAML"), write("bad.yaml", "sweep: {grid: [")),
    Case("sweep-ensemble-size-zero", ["sweep", QUICK, *TINY, "--ensemble-size", "0", "--out", "sw"], ("--ensemble-size",)),
    Case("sweep-unknown-key", ["sweep", QUICK, *TINY, "train.speed=1,2", "--out", "sw"], ("train.speed", "unknown key")),
    Case("sweep-bad-value", ["sweep", QUICK, *TINY, "train.lr=0.1,-1", "--out", "sw"], ("train.lr",)),
    Case("sweep-does-not-fit", ["sweep", QUICK, "data.n_train=1000000000,10", "--out", "sw"], ("needs at least", "GiB")),
    Case("sweep-locked", ["sweep", QUICK, *TINY, "--out", "sw", "--quiet"], ("sw", "another sweep"), held_lock),
    Case("sweep-bad-slurm", ["sweep", QUICK, *TINY, "--out", "sw", "--slurm", "partition"], ("--slurm",)),
    Case("query-missing-dir", ["query", "nothing", "SELECT 1"], ("nothing", "not a sweep directory")),
    Case("query-no-finished-job", ["query", "sw", "SELECT 1"], ("no finished job",),
         write("sw/sweep.json", '{"config": null, "config_text": "", "grid": {}, '
                                '"jobs": [{"id": "0000-aaaaaaaa", "overrides": [], "point": {}, "seeds": [1]}]}')),
    # teacher checkpoints and reports
    Case("teacher-out-exists", ["teacher", "train", "cifar10", "--root", "data", "--out", "T.pt"], ("T.pt", "already exists"), write("T.pt", "mine")),
    Case("teacher-overwrite-foreign-file", ["teacher", "train", "cifar10", "--root", "data", "--out", "T.pt", "--overwrite"],
         ("T.pt", "not a studentspec teacher checkpoint"), write("T.pt", "mine")),
    Case("prune-missing-checkpoint", ["teacher", "prune", "none.pt", "--out", "P.pt"], ("none.pt", "not found")),
    Case("prune-crafted-checkpoint", ["teacher", "prune", "T.pt", "--out", "P.pt"], ("T.pt",), crafted_checkpoint),
    Case("prune-not-a-checkpoint", ["teacher", "prune", "T.pt", "--out", "P.pt"], ("T.pt", "not a readable"), write("T.pt", "text")),
    Case("prune-bad-ratios", ["teacher", "prune", "T.pt", "--ratios", "0.3,abc", "--out", "P.pt"], ("--ratios",), crafted_checkpoint),
    Case("reproduce-overrides-not-cifar", ["reproduce", "two-layer", "train.lr=0.1", "--out", "r"], ("overrides",)),
    Case("report-not-a-result-dir", ["report", "notes"], ("notes", "not a run, sweep or reproduce dir"), write("notes/todo.txt", "x")),
    Case("report-missing-dir", ["report", "nothing"], ("nothing", "not found")),
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "run"
    assert main(["run", QUICK, *TINY, "--out", str(out), "--quiet"]) == 0
    return out


def test_the_corpus_is_large_and_distinct():
    assert len(CASES) >= 50 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_probe(case: Case, tmp_path, monkeypatch, capsys, tiny_run):
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    case.setup(ws, tiny_run)
    before = snapshot(ws)
    try:
        rc = main(case.argv)
    finally:
        while LOCKS:
            LOCKS.pop().release()
    assert_refused(rc, capsys, case.words, ws, before)


@pytest.mark.parametrize("argv", [["run", "nope.yaml", "--out", "o"], run_cmd("train.lr=.nan"), ["plot", "nothing"]])
def test_probe_as_a_process(argv, tmp_path):
    """The real process: exit status 2 and one line on stderr, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "studentspec.cli", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []
