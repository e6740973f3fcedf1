"""Packing: sweep jobs that differ only in build-only keys train as one ensemble, bitwise the unpacked jobs.

Oracle: the same sweep run with packing off (`pack=0`): every job its own ensemble, the path every other test
checks against per-seed nn.Module oracles. Packed members must store the same bytes in every table, weights.npz
and config.yaml, and the same summary.json apart from wall times and the packing note. Objective: train.loss =
half_sse (the default: the paper's J = 1/2 sum over outputs, mean over the batch) in every run here.
"""

import json
import re
import shutil
from pathlib import Path

import pytest

from studentspec import ConfigError, load_config, pipelines
from studentspec.cli import main
from studentspec.mlp.pack import BUILD_ONLY, pack
from studentspec.mlp.train import build
from studentspec.pipelines import pack_key
from studentspec.store.owner import MARKER, read_mark
from studentspec.store.record import split_record
from studentspec.sweep import grid as sweep_grid
from studentspec.sweep.grid import SweepOptions, expand, pack_jobs, parse_grid, run_sweep

from conftest import KERNEL_MISSING

TINY = ["input_dim=6", "output_dim=4", "teacher.widths=[3]", "student.multi=2", "data.n_train=80", "data.n_eval=40",
        "train.epochs=2", "train.steps_per_epoch=100"]
CASES = {
    # the compiled step (where it builds), the Lemma diagnostics and order.parquet on: metric columns and tables split too;
    # three build-only keys vary
    # and jobs of other seeds pack too (their data and sampler generators differ: a mix-up shows)
    "compiled": ["teacher.decay=0,1", "teacher.bias=-0.1,0.2", "seeds=[1,2],[5,6]",
                 "theory.enabled=true", "theory.samples=30", "eval.order=true", *TINY],
    # the torch path (momentum) with lr 0.15: seeds 1 and 2 diverge at p=0 (init 0.005 x 1) while seed 3 and p=2 live on
    "torch": ["teacher.decay=0,2", "student.init_scale=1,1.5", "student.init_std=0.005,0.006", "seeds=[1,2,3]", "train.momentum=0.9", "train.lr=0.15", *TINY],
}
WALL = {"wall_time_s", "eval_time_s", "packed_with"}  # what may differ: times, and the note naming the pack


def _same_job(a: Path, b: Path) -> None:
    """Every stored number of run dirs a and b identical (file bytes), summary.json apart from WALL."""
    names = {p.name for p in a.iterdir()}
    assert names == {p.name for p in b.iterdir()}
    for name in names - {"summary.json", MARKER}:  # the marker holds a random token and its writer: it records the same files
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{a.name}/{name} differs"
    assert sorted(read_mark(a).files) == sorted(read_mark(b).files)
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    assert {k: v for k, v in sa.items() if k not in WALL} == {k: v for k, v in sb.items() if k not in WALL}


@pytest.fixture(scope="module", params=list(CASES))
def sweeps(request, tmp_path_factory):
    """(case, items, packed sweep dir, its result, unpacked sweep dir)."""
    root = tmp_path_factory.mktemp(request.param)
    items = CASES[request.param]
    packed = run_sweep(None, items, root / "packed", SweepOptions(workers=1, progress=False, pack=None))  # auto
    plain = run_sweep(None, items, root / "plain", SweepOptions(workers=1, progress=False))  # the default: no packing
    assert not packed["failed"] and not plain["failed"]
    return request.param, items, root / "packed", packed, root / "plain"


def test_packed_members_are_bitwise_the_unpacked_jobs(sweeps):
    case, items, packed_dir, packed, plain_dir = sweeps
    jobs = packed["jobs"]
    assert packed["packs"] == [[j.id for j in jobs]]  # every job differs only in build-only keys: one task
    for job in jobs:
        _same_job(packed_dir / "jobs" / job.id, plain_dir / "jobs" / job.id)
        info = json.loads((packed_dir / "jobs" / job.id / "summary.json").read_text())
        assert info["packed_with"] == [j.id for j in jobs] and info["seeds"] == job.seeds
    kernels = {json.loads((packed_dir / "jobs" / j.id / "summary.json").read_text())["kernel"] for j in jobs}
    assert kernels == ({"torch"} if case == "torch" or KERNEL_MISSING else {"c"})
    if case == "torch":  # a pack holding diverged seeds beside live ones, in one job and across jobs
        died = [json.loads((plain_dir / "jobs" / j.id / "summary.json").read_text())["diverged"] for j in jobs]
        assert any(died) and any(len(d) < len(j.seeds) for d, j in zip(died, jobs))
    else:  # the metric tables and columns of theory and eval.order are split too
        run = packed_dir / "jobs" / jobs[0].id
        assert (run / "order.parquet").is_file()
        import pandas as pd

        assert "hungarian_corr" in pd.read_parquet(run / "teachers.parquet").columns


def test_resume_redoes_the_unfinished_members_of_a_pack(sweeps, tmp_path):
    """A sweep killed after writing part of a pack: the rest are unfinished jobs, packed again on the re-run."""
    case, items, packed_dir, packed, plain_dir = sweeps
    if case != "torch":
        pytest.skip("one case is enough")
    out = tmp_path / "resumed"
    shutil.copytree(packed_dir, out)
    jobs = packed["jobs"]
    for job in jobs[1:3]:  # members 2 and 3 of the pack never got written
        shutil.rmtree(out / "jobs" / job.id)
    (out / ".sweep.lock.holder").unlink(missing_ok=True)
    again = run_sweep(None, items, out, SweepOptions(workers=1, progress=False, pack=None))
    assert sorted(again["done"]) == sorted(j.id for j in jobs[1:3]) and len(again["skipped"]) == len(jobs) - 2
    assert again["packs"] == [[j.id for j in jobs[1:3]]]
    for job in jobs:
        _same_job(out / "jobs" / job.id, plain_dir / "jobs" / job.id)


def test_what_packs_and_what_does_not(monkeypatch):
    base = ["seeds=[1,2]", *TINY]

    def groups(items, pack=None, config=None):
        jobs = expand(config, parse_grid([*base, *items]), None)  # the later item of a key wins
        return [[jobs.index(j) for j in g] for g in pack_jobs(config, jobs, pack)]

    assert groups(["teacher.decay=0,1,2"]) == [[0, 1, 2]]
    # other shapes or other training never pack; grid order: decay varies fastest
    assert groups(["student.multi=1,2", "teacher.decay=0,1"]) == [[0, 1], [2, 3]]
    assert groups(["teacher.widths=[3],[4]", "teacher.decay=0,1"]) == [[0, 1], [2, 3]]
    for key in ("data.std=1,2", "train.lr=0.01,0.02", "data.kind=gaussian,uniform", "eval.every=1,2", "student.normalize=false,true"):
        assert groups([key]) == [[0], [1]], key
    # a checkpoint belongs to one run dir: such jobs run alone
    assert groups(["teacher.decay=0,1", "train.checkpoint_every=1"]) == [[0], [1]]
    # --pack N: at most N seeds per task; 0 and 1: off
    assert groups(["teacher.decay=0,1,2"], pack=4) == [[0, 1], [2]]
    assert groups(["teacher.decay=0,1,2"], pack=1) == [[0], [1], [2]]
    assert groups(["teacher.decay=0,1,2"], pack=0) == [[0], [1], [2]]
    # auto: no pack past the memory floor's budget
    monkeypatch.setattr(sweep_grid, "AUTO_PACK_BYTES", 1)
    assert groups(["teacher.decay=0,1"]) == [[0], [1]]
    # conv runs never pack
    assert pack_key(load_config(None, ["data.kind=cifar10", "data.root=/nonexistent"])) is None
    assert all(pack_key(load_config(None, [f"{k}={v}", *TINY])) == pack_key(load_config(None, TINY))
               for k, v in zip(BUILD_ONLY, ("2", "0.3", "0.1", "0.5")))


def test_pack_refuses_members_that_differ_in_more():
    a, b = (build(load_config(None, [*TINY[:-2], "seeds=[1]", "train.epochs=0", f"student.multi={m}"])) for m in (1, 2))
    with pytest.raises(ValueError, match="build-only"):
        pack([a, b])
    with pytest.raises(ValueError, match="seeds must be 0..1"):
        split_record(pipelines.record(pipelines.train(a.cfg, progress=False)), [a.cfg, a.cfg])


def test_dry_run_shows_the_packing(tmp_path, capsys):
    items = ["seeds=[1,2]", *TINY, "teacher.decay=0,1", "student.multi=1,2"]
    assert main(["sweep", "configs/two_layer_quick.yaml", *items, "--dry-run", "--pack", "auto", "--out", str(tmp_path / "dry")]) == 0
    text = capsys.readouterr().out
    jobs = expand("configs/two_layer_quick.yaml", parse_grid(items), None)
    assert "packing: 4 jobs in 2 tasks (2 x 2 job(s))" in text
    assert re.search(rf"task 1 +4 seeds: {jobs[0].id} {jobs[1].id}\n +task 2 +4 seeds: {jobs[2].id} {jobs[3].id}\n", text)
    assert not (tmp_path / "dry").exists()
    assert main(["sweep", "configs/two_layer_quick.yaml", *items, "--dry-run", "--out", str(tmp_path / "dry")]) == 0  # default: off
    assert "packing: 4 jobs in 4 tasks (4 x 1 job(s))" in capsys.readouterr().out
    assert main(["sweep", "configs/two_layer_quick.yaml", *items, "--dry-run", "--pack", "4", "--out", str(tmp_path / "dry")]) == 0
    assert "packing: 4 jobs in 2 tasks (2 x 2 job(s))" in capsys.readouterr().out
    assert main(["sweep", "configs/two_layer_quick.yaml", *items, "--pack", "two", "--out", str(tmp_path / "bad")]) == 2
    assert "--pack" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="--pack"):
        run_sweep(None, items, tmp_path / "bad", SweepOptions(pack=-1, dry_run=True))
