"""Sweep executors: Ray (a real head started here) and submitit equal the local pool bit for bit; failures; cost."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from studentspec import load_config
from studentspec.cli import main
from studentspec.sweep.cost import estimate, job_cost
from studentspec.sweep.grid import SweepOptions, load_sweep, run_sweep

ITEMS = ["student.multi=1,2", "seeds=[1,2,3]", "input_dim=5", "output_dim=3", "data.n_train=80", "data.n_eval=40",
         "train.epochs=2", "train.steps_per_epoch=20"]


def _assert_same_sweep(a: Path, b: Path) -> None:
    ta, tb = load_sweep(a), load_sweep(b)
    for name in ("scalars", "teachers", "students"):
        assert len(ta[name]) > 0
        pd.testing.assert_frame_equal(ta[name], tb[name], check_exact=True)
    jobs = sorted(p.name for p in (a / "jobs").iterdir())
    assert jobs and jobs == sorted(p.name for p in (b / "jobs").iterdir())
    for job in (a / "jobs").iterdir():  # the stored weights too, byte for byte
        assert (job / "weights.npz").read_bytes() == (b / "jobs" / job.name / "weights.npz").read_bytes()


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "sw"
    res = run_sweep(None, ITEMS, out, SweepOptions(ensemble_size=2, workers=2, progress=False))
    assert len(res["done"]) == 4 and not res["failed"]
    return out


# fixed ports a Ray head claims besides --port (dashboard, client server, dashboard agent): a free port
# picked at random once landed on 52365 and the head refused to start
_RAY_DEFAULT_PORTS = {6379, 8265, 10001, 52365}


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _RAY_DEFAULT_PORTS and not 10002 <= port <= 19999:  # 10002-19999: Ray's worker ports
            return port


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _wait_for_port(proc: subprocess.Popen, port: int, deadline: float) -> bool:
    """True once something listens on 127.0.0.1:port; False if proc exits first or the deadline passes."""
    while time.time() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.5)
    return False


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group proc leads, SIGKILL after 30 s; a group already gone is fine."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_ray_cluster_sweep_equals_local(local_sweep, tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'studentspec[ray]')")
    # hermetic: a token left in ~/.ray by another Ray session would otherwise switch auth on for one side only
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray_bin = Path(sys.executable).with_name("ray")
    temp = tempfile.mkdtemp(prefix="ss-ray-", dir="/tmp")  # short: Ray's unix socket paths have a length limit
    log = Path(temp) / "head.log"
    head = None
    try:
        for _attempt in range(3):  # a port taken between picking and binding: try another
            port = _free_port()
            with open(log, "w") as fh:
                head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                                         f"--temp-dir={temp}", "--include-dashboard=false", "--disable-usage-stats",
                                         "--node-ip-address=127.0.0.1"],
                                        stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ))
            if _wait_for_port(head, port, deadline=time.time() + 120):
                break
            _stop_group(head)
        else:
            pytest.fail("ray head did not start; its last output:\n" + log.read_text()[-2000:])
        out = tmp_path / "ray"
        res = run_sweep(None, ITEMS, out, SweepOptions(ensemble_size=2, progress=False, executor="ray", address=f"127.0.0.1:{port}"))
        assert len(res["done"]) == 4 and not res["failed"]
        _assert_same_sweep(local_sweep, out)
    finally:  # stop only what this test started: the head's process group, then anything using its temp dir
        if head is not None:
            _stop_group(head)
        for pid in _processes_mentioning(temp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)
    assert not _processes_mentioning(temp)


def test_submitit_local_sweep_equals_local(local_sweep, tmp_path):
    pytest.importorskip("submitit", reason="submitit is an optional extra (pip install 'studentspec[slurm]')")
    out = tmp_path / "slurm"
    res = run_sweep(None, ITEMS, out, SweepOptions(ensemble_size=2, progress=False, executor="slurm", slurm={"cluster": "local"}))
    assert len(res["done"]) == 4 and not res["failed"]
    _assert_same_sweep(local_sweep, out)


def test_failing_job_is_reported_and_others_finish(tmp_path, capsys):
    # cuda:99 passes validation but fails when the job starts (no such device, with or without a GPU)
    out = tmp_path / "sw"
    code = main(["sweep", "configs/two_layer_quick.yaml", "train.device=cpu,cuda:99", *ITEMS[1:], "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert "failed" in captured.err and "train.device=cuda:99" in captured.err
    assert load_sweep(out)["scalars"]["train.device"].unique().tolist() == ["cpu"]
    assert "finished now" in captured.out and "wall time" in captured.out


@pytest.mark.parametrize("args,match", [
    (["--executor", "ray", "--address", "127.0.0.1:1"], "cannot reach a Ray cluster"),
    (["--executor", "ray", "--address", "nonsense"], "HOST:PORT"),
    (["--executor", "slurm"], "sbatch not found"),
    (["--executor", "slurm", "--slurm", "cluster=local", "--slurm", "bogus=1"], "bogus"),
    (["--executor", "slurm", "--slurm", "cluster=moon"], "cluster"),
    (["--threads", "0"], "threads"),
])
def test_bad_executor_input_exits_2_and_writes_nothing(tmp_path, capsys, args, match):
    if "sbatch not found" in match and shutil.which("sbatch"):
        pytest.skip("a real SLURM is installed here")
    out = tmp_path / "sw"
    assert main(["sweep", "configs/two_layer_quick.yaml", *ITEMS[:2], "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_job_cost_counts_flops_by_hand():
    cfg = load_config(None, ["input_dim=5", "output_dim=3", "teacher.widths=[4]", "student.multi=2", "seeds=[1,2]",
                             "data.n_train=100", "data.n_eval=50", "train.epochs=3", "train.steps_per_epoch=10", "train.batch_size=8"])
    c = job_cost(cfg)
    macs = 5 * 8 + 8 * 3
    assert c.seed_steps == 2 * 3 * 10
    assert c.step_flops == 6 * 2 * 8 * macs
    assert c.evals == 4  # before training and after each epoch
    assert c.eval_flops == 2 * 2 * macs * (3 * 100 + 50)  # gradient norms on the training set: 3 passes


def test_dry_run_estimate_scales_with_steps():
    small = estimate(None, [[*ITEMS[2:]]], [[1]], workers=1, threads=1)
    longer = estimate(None, [[*ITEMS[2:], "train.epochs=20"]], [[1]], workers=1, threads=1)
    assert small.seed_steps == 40 and longer.seed_steps == 400
    assert longer.gflop > small.gflop > 0 and longer.seconds > small.seconds > 0


def _tasks(*ids, out="unused"):
    from studentspec.sweep.executors import Task

    return [Task(i, None, (), (1,), out, 1) for i in ids]


def test_a_pack_whose_worker_dies_is_retried_member_by_member():
    """A packed task (several jobs in one ensemble) whose worker is killed is retried unpacked: each member alone,
    so the members that fit finish; a member that kills its worker alone again fails alone."""
    import fault_jobs
    from studentspec.sweep.executors import DIED, Member, Task, local

    members = tuple(Member(i, (), (1,), "unused") for i in ("pack-kill", "m2", "kill"))
    pack = Task("pack-kill", None, (), (1,), "unused", 1, packed=members)
    got = [(t.job_id, t.packed, err) for t, err in local([pack, *_tasks("a")], 2, fn=fault_jobs.run)]
    assert sorted(got) == [("a", (), None), ("kill", (), DIED), ("m2", (), None), ("pack-kill", (), None)]


def test_a_killed_worker_fails_only_its_own_job():
    """One worker SIGKILLed (as by the OOM killer) breaks the pool; the pool is rebuilt, its siblings finish."""
    import fault_jobs
    from studentspec.sweep.executors import DIED, local

    got = dict((t.job_id, err) for t, err in local(_tasks("a", "kill", "b", "c", "d"), 2, fn=fault_jobs.run))
    assert got == {"a": None, "b": None, "c": None, "d": None, "kill": DIED}


def test_workers_die_with_their_parent(tmp_path):
    """SIGKILL the sweep's process: its workers go too, instead of writing on into the sweep dir as orphans."""
    pid_file = tmp_path / "worker.pid"
    here = Path(__file__).parent
    parent = subprocess.Popen([sys.executable, "-c", (
        f"import sys; sys.path.insert(0, {str(here)!r}); import fault_jobs\n"
        "from studentspec.sweep.executors import Task, local\n"
        f"list(local([Task('sleep', None, (), (1,), {str(pid_file)!r}, 1)], 1, fn=fault_jobs.run))")])
    try:
        deadline = time.time() + 60
        while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        os.kill(worker, 0)  # alive
    finally:
        parent.kill()
        parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    pytest.fail(f"worker {worker} outlived its parent")
