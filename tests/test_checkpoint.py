"""Checkpoint and resume of one long run (train.checkpoint_every, `run --resume`, sweeps): a resumed run's stored numbers
are bitwise those of an uninterrupted one. Objective: the config default half_sse (the paper's J) unless a case says mse."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from studentspec import StoreError, load_config, load_run, pipelines
from studentspec.cli import main
from studentspec.store import checkpoint as ck

sys.path.insert(0, str(Path(__file__).parent))
from image_files import write_cifar  # noqa: E402

TINY = ["input_dim=8", "output_dim=5", "teacher.widths=[3,4]", "student.multi=2", "data.n_train=200", "data.n_eval=100",
        "train.steps_per_epoch=25", "train.epochs=5", "train.lr=0.05", "seeds=[1,2,3]", "train.checkpoint_every=1"]


def same_run(a: Path, b: Path) -> None:
    """Every stored number of two run dirs is identical (tables, weights, per-seed summary)."""
    ra, rb = load_run(a), load_run(b)
    for name in ("scalars", "teachers", "students"):
        assert len(getattr(ra, name)) > 0 and getattr(ra, name).equals(getattr(rb, name)), name
    wa, wb = ra.weights(), rb.weights()
    assert set(wa) == set(wb) and all(np.array_equal(wa[k], wb[k], equal_nan=True) for k in wa)  # a dead seed may hold NaN
    assert ra.summary["per_seed"] == rb.summary["per_seed"]


class Crash(Exception):
    """A process dying right after it wrote a checkpoint."""


def crash_after(monkeypatch, epochs: int) -> None:
    """Make the next run die once it has written the checkpoint of `epochs` epochs."""
    real = ck.write_checkpoint

    def write(out, cfg, *, epoch, state, tables):
        real(out, cfg, epoch=epoch, state=state, tables=tables)
        if epoch == epochs:
            raise Crash

    monkeypatch.setattr(pipelines, "write_checkpoint", write)


@pytest.mark.parametrize("extra", [
    [],  # the compiled step where it builds
    ["train.kernel=torch", "train.optimizer=adam", "train.lr=0.01", "data.regenerate=true"],  # optimizer moments, regenerated data
    ["train.kernel=torch", "train.momentum=0.9", "teacher.batchnorm=before", "train.loss=mse"],  # BatchNorm statistics
    ["data.kind=online", "eval.every=2", "theory.enabled=true", "eval.order=true"],  # fresh inputs, metric columns and tables
    ["train.lr=20", "train.kernel=torch"],  # a seed that diverged before the checkpoint stays frozen after it
])
def test_a_run_resumed_from_its_checkpoint_equals_an_uninterrupted_one(tmp_path, monkeypatch, extra):
    cfg = load_config(None, [*TINY, *extra])
    uninterrupted = pipelines.train(cfg, progress=False)
    if cfg.train.lr == 20:  # the case needs a seed dead before the checkpoint (step 50) and one alive at it
        steps = uninterrupted.diverged.values()
        assert steps and min(steps) < 2 * 25 and (max(steps) >= 2 * 25 or len(steps) < 3), uninterrupted.diverged
    whole = pipelines.write_run(uninterrupted, tmp_path / "whole")
    crash_after(monkeypatch, 2)
    with pytest.raises(Crash):
        pipelines.train(cfg, progress=False, out=tmp_path / "run")
    assert json.loads((ck.checkpoint_path(tmp_path / "run") / "checkpoint.json").read_text())["epoch"] == 2
    monkeypatch.undo()
    result = pipelines.train(cfg, progress=False, out=tmp_path / "run", resume=True)
    assert result.resumed_from == 2
    same_run(whole, pipelines.write_run(result, tmp_path / "run"))
    assert not ck.checkpoint_path(tmp_path / "run").exists()  # the complete run replaces its checkpoint
    assert load_run(tmp_path / "run").summary["resumed_from_epoch"] == 2 and load_run(whole).summary["resumed_from_epoch"] is None
    if cfg.eval.order:  # a metric's own table keeps the rows measured before the checkpoint
        a, b = load_run(whole).table("order"), load_run(tmp_path / "run").table("order")
        assert len(a) > 0 and a.equals(b)


def _kill_when_checkpointed(cmd: list[str], ckpt: Path, cwd: Path, min_epoch: int = 1) -> int:
    """Start `cmd`, SIGKILL it once a checkpoint of at least `min_epoch` epochs exists; the epoch it was killed after."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            marker = ckpt / "checkpoint.json"
            if marker.is_file() and json.loads(marker.read_text())["epoch"] >= min_epoch:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return json.loads(marker.read_text())["epoch"]
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        raise AssertionError("no checkpoint appeared")
    finally:
        if proc.poll() is None:
            proc.kill()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "studentspec.cli", *args]


def test_kill_9_then_resume_gives_the_uninterrupted_run_mlp(tmp_path):
    over = ["seeds=[1,2]", "train.epochs=40", "train.steps_per_epoch=1000", "train.checkpoint_every=1", "data.n_train=2000",
            "data.n_eval=1000", "student.multi=2"]
    repo = Path(__file__).resolve().parents[1]
    assert main(["run", str(repo / "configs/two_layer_quick.yaml"), *over, "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    epoch = _kill_when_checkpointed(_cli("run", str(repo / "configs/two_layer_quick.yaml"), *over, "--out", str(tmp_path / "run"),
                                         "--quiet"), ck.checkpoint_path(tmp_path / "run"), tmp_path)
    assert 1 <= epoch < 40 and not (tmp_path / "run").exists()
    assert main(["run", str(repo / "configs/two_layer_quick.yaml"), *over, "--out", str(tmp_path / "run"), "--quiet", "--resume"]) == 0
    assert load_run(tmp_path / "run").summary["resumed_from_epoch"] == epoch
    same_run(tmp_path / "whole", tmp_path / "run")


def test_kill_9_then_resume_gives_the_uninterrupted_run_conv(tmp_path):
    data = write_cifar(tmp_path / "data", per_batch=20, n_test=24)
    base = ["teacher.widths=[4,4,4,4]", "teacher_train.batch_size=25", "train.threads=1", "eval.batch_size=12"]
    assert main(["teacher", "train", "cifar10", *base, "--root", str(data), "--out", str(tmp_path / "T.pt"), "--epochs", "1", "--quiet"]) == 0
    cfg = tmp_path / "student.yaml"
    cfg.write_text(f"""seeds: [1, 2]
teacher: {{widths: [4, 4, 4, 4], batchnorm: after, batchnorm_affine: true, checkpoint: {tmp_path / 'T.pt'}}}
student: {{multi: 2, init_std: null}}
data: {{kind: cifar10, root: {data}, n_train: 100, n_eval: 24}}
train: {{lr: 0.005, momentum: 0.9, batch_size: 10, steps_per_epoch: null, epochs: 30, dtype: float64, threads: 1, checkpoint_every: 1,
        loss: mse}}
eval: {{batch_size: 12, every: 2}}
""")
    assert main(["run", str(cfg), "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    epoch = _kill_when_checkpointed(_cli("run", str(cfg), "--out", str(tmp_path / "run"), "--quiet"), ck.checkpoint_path(tmp_path / "run"),
                                    tmp_path, min_epoch=3)
    assert 3 <= epoch < 30
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--quiet", "--resume"]) == 0
    assert load_run(tmp_path / "run").summary["resumed_from_epoch"] == epoch
    same_run(tmp_path / "whole", tmp_path / "run")


def test_a_killed_sweep_resumes_its_job_from_the_checkpoint(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    over = ["seeds=[1,2]", "train.epochs=40", "train.steps_per_epoch=1000", "train.checkpoint_every=1", "data.n_train=2000",
            "data.n_eval=1000", "train.threads=1"]
    sweep = _cli("sweep", str(repo / "configs/two_layer_quick.yaml"), "student.multi=2", *over, "--out", str(tmp_path / "sw"),
                 "--ensemble-size", "2", "--workers", "1", "--quiet")
    jobs = tmp_path / "sw" / "jobs"
    proc = subprocess.Popen(sweep, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(jobs.glob(".*.checkpoint/checkpoint.json")) and time.time() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (marker,) = jobs.glob(".*.checkpoint/checkpoint.json")
    time.sleep(1)  # the worker dies with its parent (PR_SET_PDEATHSIG); let it go
    epoch = json.loads(marker.read_text())["epoch"]
    assert subprocess.run(sweep, cwd=tmp_path, capture_output=True, timeout=300).returncode == 0
    (job,) = [d for d in jobs.iterdir() if not d.name.startswith(".")]
    resumed = load_run(job).summary["resumed_from_epoch"]
    assert resumed is not None and resumed >= epoch  # it continued from a checkpoint, not from step 0
    assert main(["run", str(repo / "configs/two_layer_quick.yaml"), "student.multi=2", *over, "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    same_run(tmp_path / "whole", job)
    assert not list(jobs.glob(".*.checkpoint"))


def test_a_checkpoint_of_another_config_or_a_corrupt_one_is_refused_before_work(tmp_path, monkeypatch, capsys):
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs/two_layer_quick.yaml", TINY)
    crash_after(monkeypatch, 1)
    with pytest.raises(Crash):
        pipelines.train(cfg, progress=False, out=tmp_path / "run")
    monkeypatch.undo()
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    argv = ["run", "configs/two_layer_quick.yaml", *TINY]
    out = ["--out", str(tmp_path / "run"), "--quiet", "--resume"]
    assert main([*argv, "train.lr=0.07", *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written for another config (train.lr differs)" in err[0]
    (ck.checkpoint_path(tmp_path / "run") / "state.pt").write_bytes(b"not a torch file")
    assert main([*argv, *out]) == 2
    assert "corrupt checkpoint" in capsys.readouterr().err
    (ck.checkpoint_path(tmp_path / "run") / "checkpoint.json").unlink()  # outside the raises block: only the read may raise
    with pytest.raises(StoreError, match="not a complete studentspec checkpoint"):
        ck.read_checkpoint(tmp_path / "run", cfg)
    assert not (tmp_path / "run").exists()


def test_resume_without_a_checkpoint_starts_from_step_0(tmp_path, capsys):
    repo = Path(__file__).resolve().parents[1]
    assert main(["run", str(repo / "configs/two_layer_quick.yaml"), *TINY, "--out", str(tmp_path / "run"), "--quiet", "--resume"]) == 0
    assert "starting from step 0" in capsys.readouterr().err
    assert load_run(tmp_path / "run").summary["resumed_from_epoch"] is None
