"""Values and YAML, and big inputs: the probe corpus of issue 23's classes 3 and 6, one table.

Every case runs `studentspec.cli.main` in a fresh working directory and asserts exit code 2, one stderr line
starting `studentspec: error: ` with the words that name the key or file, at most probe.MAX_LINE characters (a message
quotes at most ~100 characters of any value: a 300-byte YAML file once became a 300 MB line), no traceback, and
the working directory unchanged byte for byte. Below the table: a grid point is validated once, the warning on
large sweeps, and a refused grid is refused before any point is validated.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import studentspec.config
from probe import assert_refused, snapshot
from studentspec.cli import main
from studentspec.sweep import grid as sweep_grid

sys.path.insert(0, str(Path(__file__).parent))
from test_probe import QUICK, TINY, write  # noqa: E402

ROOT_READS_ALL = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class Case:
    """One probe: the command line, words the error must contain, files to create, environment variables to set."""

    id: str
    argv: list[str]
    words: tuple[str, ...]
    setup: Callable[[Path, Path], None] = field(default=lambda ws, run: None)
    env: dict[str, str] = field(default_factory=dict)
    skip: str = ""  # a reason to skip the case on this machine


def run_cmd(*extra: str) -> list[str]:
    return ["run", QUICK, *TINY, *extra, "--out", "out", "--quiet"]


def sweep_cmd(*extra: str) -> list[str]:
    return ["sweep", QUICK, *TINY, *extra, "--out", "sw", "--dry-run", "--quiet"]


def fifo(name: str) -> Callable[[Path, Path], None]:
    def make(ws: Path, run: Path) -> None:
        os.mkfifo(ws / name)
    return make


def link(name: str, target: str) -> Callable[[Path, Path], None]:
    def make(ws: Path, run: Path) -> None:
        (ws / name).symlink_to(target)
    return make


def unreadable(name: str) -> Callable[[Path, Path], None]:
    def make(ws: Path, run: Path) -> None:
        write(name, "train:\n  lr: 0.1\n")(ws, run)
        (ws / name).chmod(0)
    return make


LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "seeds: *i\n"
LONG_NAME = "x" * 5000  # one path component over NAME_MAX
LONG_PATH = "/".join(["y" * 200] * 25)  # components that fit, a whole over PATH_MAX
BIG = "z" * 200_000  # a value far longer than any message may quote
GRID_1001 = ",".join(str(i) for i in range(1001))  # two such keys: a grid of 1,002,001 points

CASES = [
    # ranges of values
    Case("betas-above-1", run_cmd("train.optimizer=adam", "train.betas=[0.9,1.5]"), ("train.betas: ", "less than 1", "got 1.5 as item 2")),
    Case("betas-negative", run_cmd("train.optimizer=adam", "train.betas=[-0.1,0.999]"), ("train.betas: ", "item 1")),
    Case("betas-one-value", run_cmd("train.betas=[0.9]"), ("train.betas", "at least 2")),
    Case("weight-decay-one", run_cmd("train.weight_decay=1"), ("train.weight_decay", "less than 1")),
    Case("leaky-slope-one", run_cmd("teacher.leaky_slope=1"), ("teacher.leaky_slope",)),
    Case("width-past-c-int", run_cmd("teacher.widths=[3000000000]"), ("teacher.widths: ", "2147483647")),
    Case("student-width-past-c-int", run_cmd("student.multi=1e12"), ("student.multi", "wider than 2147483647")),
    Case("n-train-past-c-int", run_cmd("data.n_train=3000000000"), ("data.n_train",)),
    Case("epochs-past-c-int", run_cmd("train.epochs=10000000000"), ("train.epochs",)),
    Case("threads-thousands", run_cmd("train.threads=5000"), ("train.threads", "1024")),
    Case("quantiles-repeated", run_cmd("theory.quantiles=[0.5,0.5]"), ("theory.quantiles", "distinct")),
    Case("quantile-above-1", run_cmd("theory.quantiles=[1.5]"), ("theory.quantiles", "[0, 1]")),
    Case("lr-schedule-epoch-past-c-int", run_cmd("train.lr={0: 0.1, 3000000000: 0.2}"), ("train.lr", "schedule epochs")),
    Case("prune-ratio-one", run_cmd("teacher_train.prune_ratios=[1.0]"), ("teacher_train.prune_ratios: ", "item 1")),
    Case("teacher-seed-negative", run_cmd("teacher_train.seed=-1"), ("teacher_train.seed",)),
    Case("data-root-empty", run_cmd("data.root=''"), ("data.root",)),
    Case("checkpoint-path-with-nul", run_cmd('teacher.checkpoint="T\\0.pt"'), ("teacher.checkpoint", "NUL")),
    Case("eval-threshold-zero", run_cmd("eval.threshold=0"), ("eval.threshold",)),
    Case("seeds-past-the-limit", ["run", "s.yaml", "--out", "out"], ("s.yaml", "seeds", "100000"),
         write("s.yaml", "seeds: [" + ",".join(map(str, range(100_001))) + "]\n")),
    # values echoed: at most ~100 characters of each
    Case("huge-unknown-key", run_cmd(f"{BIG}=1"), ("zzz", "unknown key")),
    Case("huge-string-for-a-number", run_cmd(f"train.lr={BIG}"), ("train.lr",)),
    Case("huge-data-kind", run_cmd(f"data.kind={BIG}"), ("data.kind", "at most 100 characters")),
    Case("huge-unparsable-value", run_cmd(f"seeds=[{BIG}"), ("seeds", "cannot parse")),
    Case("huge-list-for-a-number", run_cmd("train.lr=[" + ",".join(["1"] * 50_000) + "]"), ("train.lr",)),
    Case("huge-freeze-list", run_cmd("train.freeze=[" + ",".join(["9"] * 900) + "]"), ("train.freeze",)),
    Case("huge-value-in-a-file", ["run", "v.yaml", "--out", "out"], ("train.optimizer",), write("v.yaml", f"train:\n  optimizer: {BIG}\n")),
    Case("huge-grid-value", sweep_cmd(f"train.lr=0.1,{BIG}"), ("train.lr",)),
    Case("huge-pack", sweep_cmd("--pack", BIG), ("--pack",)),
    Case("huge-ratios", ["teacher", "prune", "T.pt", "--ratios", f"0.3,{BIG}", "--out", "P.pt"], ("--ratios",)),
    Case("huge-reproduce-override", ["reproduce", "two-layer", f"train.lr={BIG}", "--out", "r"], ("overrides",)),
    Case("huge-float-option", ["converge", "nothing", "--tol", BIG], ("converge", "--tol", "invalid float")),
    Case("huge-choice-option", ["sweep", QUICK, "--executor", BIG, "--out", "sw"], ("sweep", "--executor", "invalid choice")),
    Case("option-missing", ["run", QUICK], ("run", "--out", "required")),
    Case("bad-slurm-yaml", ["sweep", QUICK, *TINY, "--out", "sw", "--slurm", "timeout_min=[1,"], ("--slurm", "timeout_min", "cannot parse")),
    # YAML: duplicate keys, aliases, nesting
    Case("duplicate-section", ["run", "d.yaml", "--out", "out"], ("d.yaml", "duplicate key 'train'", "line 4", "line 1"),
         write("d.yaml", "train:\n  lr: 0.1\nseeds: [1]\ntrain:\n  epochs: 2\n")),
    Case("duplicate-nested-key", ["run", "d.yaml", "--out", "out"], ("d.yaml", "duplicate key 'lr'"), write("d.yaml", "train:\n  lr: 0.1\n  lr: 0.2\n")),
    Case("duplicate-sweep-section", ["sweep", "d.yaml", "--out", "sw", "--dry-run"], ("d.yaml", "duplicate key 'sweep'"),
         write("d.yaml", "sweep:\n  grid: {train.lr: [0.1]}\nsweep:\n  grid: {train.lr: [0.2]}\n")),
    Case("duplicate-key-in-override", run_cmd("train={lr: 1, lr: 2}"), ("train", "duplicate key 'lr'")),
    Case("billion-laughs", ["run", "l.yaml", "--out", "out"], ("l.yaml", "aliases"), write("l.yaml", LAUGHS)),
    Case("alias-in-override", run_cmd("seeds=[&a 1, *a]"), ("seeds", "aliases")),
    Case("nested-5000-in-a-file", ["run", "n.yaml", "--out", "out"], ("n.yaml",), write("n.yaml", "seeds: " + "[" * 5000 + "]" * 5000 + "\n")),
    Case("nested-100-in-an-override", run_cmd("seeds=" + "[" * 100 + "]" * 100), ("seeds", "nested more than 64 levels")),
    Case("nested-100-mappings", ["run", "m.yaml", "--out", "out"], ("m.yaml", "nested more than 64 levels"),
         write("m.yaml", "".join(f"{'  ' * i}k{i}:\n" for i in range(100)) + "  " * 100 + "v: 1\n")),
    # config files that cannot be read
    Case("config-a-fifo", ["run", "f.yaml", "--out", "out"], ("f.yaml", "not a regular file"), fifo("f.yaml")),
    Case("sweep-config-a-fifo", ["sweep", "f.yaml", "--out", "sw"], ("f.yaml", "not a regular file"), fifo("f.yaml")),
    Case("config-link-loop", ["run", "loop.yaml", "--out", "out"], ("loop.yaml", "cannot read", "symbolic links"), link("loop.yaml", "loop.yaml")),
    Case("config-unreadable", ["run", "u.yaml", "--out", "out"], ("u.yaml", "cannot read", "Permission denied"), unreadable("u.yaml"),
         skip="root reads a file of mode 000" if ROOT_READS_ALL else ""),
    Case("config-too-large", ["run", "big.yaml", "--out", "out"], ("big.yaml", "5.0 MB", "4 MB"), write("big.yaml", "# " + "x" * (5 * 2**20 - 3) + "\n")),
    Case("sweep-config-too-large", ["sweep", "big.yaml", "--out", "sw"], ("big.yaml", "MB"), write("big.yaml", "a: [" + "1," * (5 * 2**19) + "1]\n")),
    # the environment
    Case("kernel-env-unknown", run_cmd(), ("STUDENTSPEC_KERNEL", "torch"), env={"STUDENTSPEC_KERNEL": "c"}),
    Case("kernel-isa-env-unknown", run_cmd(), ("STUDENTSPEC_KERNEL_ISA", "avx2"), env={"STUDENTSPEC_KERNEL_ISA": "avx1024"}),
    Case("kernel-env-with-torch-kernel", run_cmd("train.kernel=torch"), ("STUDENTSPEC_KERNEL",), env={"STUDENTSPEC_KERNEL": "yes"}),
    Case("kernel-env-in-a-sweep", sweep_cmd("train.lr=0.1,0.2"), ("STUDENTSPEC_KERNEL",), env={"STUDENTSPEC_KERNEL": "TORCH"}),
    # paths too long for the file system (ENAMETOOLONG), outputs and inputs
    Case("run-out-name-5000", ["run", QUICK, *TINY, "--out", LONG_NAME], ("--out", "file name too long", "5000 bytes")),
    Case("run-out-path-5000", ["run", QUICK, *TINY, "--out", LONG_PATH], ("--out", "path too long")),
    Case("sweep-out-name-5000", ["sweep", QUICK, *TINY, "--out", LONG_NAME], ("--out", "file name too long")),
    Case("population-out-name-5000", ["population", QUICK, "--out", LONG_NAME], ("--out", "file name too long")),
    Case("reproduce-out-name-5000", ["reproduce", "deep", "--scale", "tiny", "--out", LONG_NAME], ("--out", "file name too long")),
    Case("plot-out-name-5000", ["plot", "nothing", "--out", LONG_NAME], ("--out", "file name too long")),
    Case("teacher-out-name-5000", ["teacher", "train", "cifar10", "--root", "d", "--out", LONG_NAME], ("--out", "file name too long")),
    Case("report-dir-name-5000", ["report", LONG_NAME], ("DIR", "file name too long")),
    Case("config-name-5000", ["run", LONG_NAME, "--out", "out"], ("CONFIG", "file name too long")),
    Case("run-dir-name-5000", ["plot", LONG_NAME], ("RUN_DIR", "file name too long")),
    Case("checkpoint-name-5000", ["teacher", "prune", LONG_NAME, "--out", "P.pt"], ("CHECKPOINT", "file name too long")),
    # big sweeps
    Case("grid-past-a-million-points", sweep_cmd(f"teacher.decay={GRID_1001}", f"teacher.bias={GRID_1001}"), ("sweep", "1002001 points")),
]


def test_the_corpus_is_large_and_distinct():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_probe(case: Case, tmp_path, monkeypatch, capsys):
    if case.skip:
        pytest.skip(case.skip)
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    for name in ("STUDENTSPEC_KERNEL", "STUDENTSPEC_KERNEL_ISA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    case.setup(ws, tmp_path)
    before = snapshot(ws)
    try:
        rc = main(case.argv)
    except SystemExit as stop:  # argparse's own checks exit from parse_args
        rc = stop.code
    assert_refused(rc, capsys, case.words, ws, before)


def _count_validations(monkeypatch) -> list[int]:
    """Count calls of config.build_config (every validation of a config goes through it)."""
    calls = [0]
    real = studentspec.config.build_config

    def counting(tree):
        calls[0] += 1
        return real(tree)

    monkeypatch.setattr(studentspec.config, "build_config", counting)
    # the calibration's timed variants of the measured jobs are not validations of grid points: not counted, even
    # where sweep/cost.py is first imported after this patch
    importlib.import_module("studentspec.sweep.cost")
    monkeypatch.setattr(sys.modules["studentspec.sweep.cost"], "build_config", real)
    return calls


def test_a_dry_run_validates_each_grid_point_once(monkeypatch, tmp_path, capsys):
    """12 points, 2 seeds each, one seed per job, auto packing and the cost estimate: 12 validations for the grid
    (the calibration's timed variants of two measured jobs are built in sweep/cost.py, not counted here)."""
    calls = _count_validations(monkeypatch)
    argv = ["sweep", QUICK, *TINY, "seeds=[1,2]", "teacher.decay=0.5,1,2", "teacher.bias=0,0.1,0.2,0.3", "--ensemble-size", "1",
            "--pack", "auto", "--dry-run", "--quiet", "--out", str(tmp_path / "sw")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "24 jobs" in out and "estimated" in out  # the calibrated estimate is still printed
    assert calls[0] == 12


def test_expanding_reads_the_config_file_once(monkeypatch, tmp_path):
    reads = [0]
    real = studentspec.config.read_mapping

    def counting(path):
        reads[0] += 1
        return real(path)

    monkeypatch.setattr(studentspec.config, "read_mapping", counting)
    monkeypatch.setattr(sweep_grid, "read_mapping", counting)
    result = sweep_grid.run_sweep(QUICK, [*TINY, "teacher.decay=0.5,1,2,3"], tmp_path / "sw",
                                  sweep_grid.SweepOptions(dry_run=True, progress=False, pack=None))
    assert len(result["jobs"]) == 4 and reads[0] == 1


def test_a_large_sweep_warns_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sweep_grid, "WARN_JOBS", 3)
    result = sweep_grid.run_sweep(QUICK, [*TINY, "teacher.decay=0.5,1,2,3"], tmp_path / "sw",
                                  sweep_grid.SweepOptions(dry_run=True, progress=False))
    err = capsys.readouterr().err.strip()
    assert len(result["jobs"]) == 4
    assert err.startswith("studentspec: warning: this sweep has 4 jobs (over 3)") and "\n" not in err, err


def test_a_grid_past_the_limit_is_refused_before_any_point_is_validated(monkeypatch, tmp_path):
    calls = _count_validations(monkeypatch)
    monkeypatch.setattr(sweep_grid, "MAX_JOBS", 10)
    with pytest.raises(studentspec.config.ConfigError, match="11 points"):
        sweep_grid.run_sweep(QUICK, [*TINY, f"teacher.decay={','.join(map(str, range(11)))}"], tmp_path / "sw",
                             sweep_grid.SweepOptions(dry_run=True, progress=False))
    assert calls[0] == 0


def test_a_grid_whose_jobs_pass_the_limit_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(sweep_grid, "MAX_JOBS", 10)
    with pytest.raises(studentspec.config.ConfigError, match="more than 10 jobs"):
        sweep_grid.run_sweep(QUICK, [*TINY, "seeds=[1,2,3,4,5,6]", "teacher.decay=1,2"], tmp_path / "sw",
                             sweep_grid.SweepOptions(ensemble_size=1, dry_run=True, progress=False))


def test_a_long_seed_list_is_refused_before_it_is_read_to_the_end():
    """The reader stops at the 100,001st seed: a list far past the limit costs no more than one at it."""
    text = "seeds: [" + ",".join(map(str, range(100_000))) + ", oops" + ", [" * 10 + "\n"  # broken YAML after the limit
    with pytest.raises(studentspec.config.YAMLRefused, match="more than 100000 seeds"):
        studentspec.config.parse_yaml(text)


def test_the_limits_leave_the_largest_config_studentspec_writes_readable(tmp_path):
    """A run's config.yaml with the most seeds a config may hold, each of 19 digits, loads."""
    import yaml

    cfg = studentspec.config.load_config(None, ["seeds=[1]"])
    tree = cfg.to_dict() | {"seeds": [2**63 - 1 - i for i in range(studentspec.config.MAX_SEEDS)]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    assert path.stat().st_size <= studentspec.config.MAX_CONFIG_BYTES
    assert len(studentspec.config.load_config(path).seeds) == studentspec.config.MAX_SEEDS


def test_override_values_are_parsed_once_per_distinct_item_and_not_shared():
    """config_maker caches parsed overrides; a cached mapping must not carry one point's keys into the next."""
    make = studentspec.config.config_maker(None)
    a = make(["train={lr: 0.5}", "train.epochs=3"])
    b = make(["train={lr: 0.5}"])
    assert (a.train.lr, a.train.epochs) == (0.5, 3) and (b.train.lr, b.train.epochs) == (0.5, 100)
