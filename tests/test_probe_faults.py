"""Faults end in one line: Ctrl-C, SIGKILL, a full disk, a file-size limit, a read-only or immutable old run.

Each case runs the real command (a process where a signal or a resource limit is involved), then asserts the
exit code (130 for Ctrl-C, 1 for a fault during the work, 2 for one found before it), one line on stderr naming
what failed and the state of the results, no traceback, the old run unchanged where there was one, nothing
hidden left beside the output, and that the next run recovers. A full disk is a small tmpfs the test mounts
(root only) and an immutable run `chattr +i` (root; modes do not stop root): elsewhere those cases are skipped
with the reason.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from studentspec import load_run, pipelines
from studentspec.cli import EXIT_BAD_INPUT, EXIT_FAULT, EXIT_INTERRUPTED, main
from studentspec.store.checkpoint import checkpoint_path

sys.path.insert(0, str(Path(__file__).parent))
from test_probe import QUICK, TINY, snapshot  # noqa: E402

# long enough to be interrupted mid-training (about 2 s of steps; a checkpoint every 5 of 50 epochs)
LONG = [*TINY, "train.epochs=50", "train.steps_per_epoch=2000", "train.checkpoint_every=5"]
TIMEOUT = 180


def sweep(workers: int) -> list[str]:
    """A sweep of four jobs of about 1 s of steps each into sw."""
    return ["sweep", QUICK, *TINY, "train.lr=0.01,0.02,0.03,0.04", "train.epochs=10", "train.steps_per_epoch=5000", "--workers",
            str(workers), "--out", "sw", "--quiet"]
def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "studentspec.cli", *argv]


def start(argv: list[str], cwd: Path, **kw) -> subprocess.Popen:
    """The real command in a session of its own (its workers share its process group), stdout and stderr captured."""
    return subprocess.Popen(cli(*argv), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    """Poll until `ready()`; fail if `proc` ends first or nothing happens in TIMEOUT seconds."""
    deadline = time.time() + TIMEOUT
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the command ended before {what}: {proc.communicate()}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no {what} in {TIMEOUT} s")
        time.sleep(0.02)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `proc`, killing its group if it hangs."""
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the command did not end: {err[-2000:]}")
    return proc.returncode, out, err


def one_line(err: str, start: str, *words: str) -> str:
    """The single stderr line, which starts with `start` and names every word; no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(start), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def hidden(folder: Path) -> set[str]:
    """Hidden entries of `folder` (staging and set-aside dirs, temporary files are all hidden)."""
    return {p.name for p in folder.iterdir() if p.name.startswith(".")}


def group_gone(pgid: int, timeout: float = 15.0) -> bool:
    """True once no process of group `pgid` is left (the sweep's workers share their parent's group)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(stat.parent.name)
        if not alive:
            return True
        time.sleep(0.1)
    for pid in alive:
        os.kill(int(pid), signal.SIGKILL)
    return False


def finished_jobs(sweep: Path) -> list[Path]:
    jobs = sweep / "jobs"
    return [d for d in jobs.iterdir() if not d.name.startswith(".") and (d / "summary.json").is_file()] if jobs.is_dir() else []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "run"
    assert main(["run", QUICK, *TINY, "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Path:
    """An empty working directory, the current one."""
    d = tmp_path / "ws"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


# ---------------------------------------------------------------- Ctrl-C and SIGKILL


@pytest.mark.parametrize("old", [False, True], ids=["fresh", "overwrite"])
def test_ctrl_c_of_a_run_ends_in_one_line_and_keeps_its_checkpoint(old, ws, tiny_run, capsys):
    if old:
        shutil.copytree(tiny_run, ws / "o")
    before = snapshot(ws)
    proc = start(["run", QUICK, *LONG, "--out", "o", "--quiet", *(["--overwrite"] if old else [])], ws)
    wait_until(lambda: (checkpoint_path(ws / "o") / "checkpoint.json").is_file(), proc, "a checkpoint")
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    rc, out, err = finish(proc)
    state = "the old run at o is unchanged" if old else "nothing was written to o"
    assert rc == EXIT_INTERRUPTED, (rc, err)
    one_line(err, "studentspec: interrupted: ", state, "checkpoint", "--resume")
    assert hidden(ws) == {checkpoint_path(ws / "o").name}  # no staging dir, nothing set aside
    assert {k: v for k, v in snapshot(ws).items() if not k.startswith(".")} == before
    epoch = json.loads((checkpoint_path(ws / "o") / "checkpoint.json").read_text())["epoch"]
    assert main(["run", QUICK, *LONG, "--out", "o", "--quiet", "--resume", *(["--overwrite"] if old else [])]) == 0
    assert load_run(ws / "o").summary["resumed_from_epoch"] == epoch and hidden(ws) == set()


@pytest.mark.parametrize("whom", ["group", "parent"])
def test_ctrl_c_of_a_sweep_stops_its_workers_quietly_and_it_resumes(whom, ws):
    """Ctrl-C in a terminal reaches the whole process group; `kill -INT` only the sweep process: either way one line,
    no worker's traceback, no worker left, no staging dir left; the same command then finishes the sweep (run once:
    a sweep takes 10-30 s on 2 busy cores)."""
    argv = sweep(2 if whom == "group" else 1)  # two workers ignore the terminal's SIGINT; one is stopped by its parent
    proc = start(argv, ws)
    wait_until(lambda: len(finished_jobs(ws / "sw")) >= 1, proc, "a finished job")
    (os.killpg if whom == "group" else os.kill)(proc.pid, signal.SIGINT)
    rc, out, err = finish(proc)
    assert rc == EXIT_INTERRUPTED, (rc, err)
    one_line(err, "studentspec: interrupted: ", "finished jobs in sw are kept", "re-run the same command")
    assert group_gone(proc.pid), "a worker outlived the interrupted sweep"
    done = len(finished_jobs(ws / "sw"))
    assert 1 <= done < 4 and hidden(ws / "sw" / "jobs") == set()
    if whom == "parent":
        return
    again = subprocess.run(cli(*argv), cwd=ws, capture_output=True, text=True, timeout=TIMEOUT)
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert len(finished_jobs(ws / "sw")) == 4 and re.search(rf"already finished\s+{done}\b", again.stdout), again.stdout


def test_sigkill_of_a_sweep_takes_its_workers_and_the_same_command_finishes(ws):
    argv = sweep(1)
    proc = start(argv, ws)
    wait_until(lambda: len(finished_jobs(ws / "sw")) >= 1, proc, "a finished job")
    proc.kill()  # the sweep process alone: its workers die with it (PR_SET_PDEATHSIG)
    finish(proc)
    assert group_gone(proc.pid), "a worker outlived its killed sweep"
    again = subprocess.run(cli(*argv), cwd=ws, capture_output=True, text=True, timeout=TIMEOUT)
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert len(finished_jobs(ws / "sw")) == 4 and hidden(ws / "sw" / "jobs") == set()  # the killed jobs' staging dirs removed
    for job in finished_jobs(ws / "sw"):
        load_run(job)


@pytest.mark.parametrize("argv,state", [
    (["run", QUICK, *TINY, "--out", "o"], "nothing was written to o"),
    (["population", QUICK, "teacher.bias=0", "--out", "o"], "nothing was written to o"),
    (["converge", "run"], "nothing was written to run/converge.json"),
    (["sweep", QUICK, *TINY, "--out", "o"], "the finished jobs in o are kept; re-run the same command to resume"),
    (["teacher", "train", "cifar10", "--root", "data", "--out", "o"], "nothing was written to o"),
], ids=["run", "population", "converge", "sweep", "teacher"])
def test_a_keyboard_interrupt_anywhere_in_a_command_is_one_line(argv, state, ws, tiny_run, monkeypatch, capsys):
    """KeyboardInterrupt raised from the middle of the work (here: training, the flow, the continuation, the jobs)."""
    from studentspec.conv import teacher
    from studentspec.sweep import executors
    from studentspec.theory import converge, population

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    shutil.copytree(tiny_run, ws / "run")
    for module, name in ((pipelines, "train"), (population, "flow_from_config"), (converge, "converge_run"), (executors, "local"),
                         (teacher, "train_teacher")):
        monkeypatch.setattr(module, name, interrupt)
    before = snapshot(ws)
    try:
        rc = main(argv)
    except KeyboardInterrupt:  # would end the whole pytest session
        pytest.fail("KeyboardInterrupt escaped main()")
    assert rc == EXIT_INTERRUPTED
    one_line(capsys.readouterr().err, "studentspec: interrupted: ", state)
    assert {k: v for k, v in snapshot(ws).items() if not k.startswith("o")} == before  # a sweep dir o has its manifest


# ---------------------------------------------------------------- a file-size limit (EFBIG)


def _limit_file_size(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing
    return preexec


@pytest.mark.parametrize("old", [False, True], ids=["fresh", "overwrite"])
def test_a_file_size_limit_is_one_line_and_the_old_run_is_kept(old, ws, tiny_run):
    if old:
        shutil.copytree(tiny_run, ws / "o")
    before = snapshot(ws)
    proc = subprocess.run(cli("run", QUICK, *TINY, "--out", "o", "--quiet", *(["--overwrite"] if old else [])), cwd=ws, capture_output=True,
                          text=True, timeout=TIMEOUT, preexec_fn=_limit_file_size(4096))  # a parquet table is larger
    assert proc.returncode == EXIT_FAULT, (proc.returncode, proc.stderr)
    one_line(proc.stderr, "studentspec: error: writing o: ", "File too large", "the old run at o is unchanged" if old else "nothing was written to o")
    assert snapshot(ws) == before and hidden(ws) == set()
    if old:
        load_run(ws / "o")
    assert main(["run", QUICK, *TINY, "--out", "o", "--quiet", *(["--overwrite"] if old else [])]) == 0  # without the limit


# ---------------------------------------------------------------- a full disk (ENOSPC) on a small tmpfs


@pytest.fixture
def small_fs(tmp_path) -> Iterator[Callable[[str], Path]]:
    """mount(size) -> a fresh tmpfs of that size, unmounted at the end; skipped where the test cannot mount one."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a small tmpfs (a disk that fills up) needs root and mount(8)")
        d = tmp_path / f"fs{len(mounts)}"
        d.mkdir()
        got = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "studentspec-test", str(d)], capture_output=True, text=True)
        if got.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {(got.stderr or got.stdout).strip()[:100]}")
        mounts.append(d)
        return d

    yield mount
    for d in reversed(mounts):
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def remount(fs: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(fs)], check=True, capture_output=True)


def fill(path: Path) -> None:
    """Take every free byte of the file system holding `path` (a file it creates or extends)."""
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err


def test_a_full_disk_is_one_line_and_nothing_is_written(small_fs, tiny_run, monkeypatch, capsys):
    fs = small_fs("16k")  # smaller than a run dir
    monkeypatch.chdir(fs)
    assert main(["run", QUICK, *TINY, "--out", "o", "--quiet"]) == EXIT_FAULT
    one_line(capsys.readouterr().err, "studentspec: error: writing o: ", "No space left on device", "nothing was written to o")
    assert list(fs.iterdir()) == []
    remount(fs, "size=4m")
    assert main(["run", QUICK, *TINY, "--out", "o", "--quiet"]) == 0
    load_run(fs / "o")


def test_a_full_disk_under_overwrite_keeps_the_old_run(small_fs, tiny_run, monkeypatch, capsys):
    fs = small_fs("1m")
    shutil.copytree(tiny_run, fs / "o")
    fill(fs / "filler")
    monkeypatch.chdir(fs)
    before = snapshot(fs / "o")
    assert main(["run", QUICK, *TINY, "train.lr=0.02", "--out", "o", "--quiet", "--overwrite"]) == EXIT_FAULT
    one_line(capsys.readouterr().err, "studentspec: error: writing o: ", "No space left on device", "the old run at o is unchanged")
    assert snapshot(fs / "o") == before and {p.name for p in fs.iterdir()} == {"o", "filler"}
    load_run(fs / "o")
    (fs / "filler").unlink()
    assert main(["run", QUICK, *TINY, "train.lr=0.02", "--out", "o", "--quiet", "--overwrite"]) == 0
    assert load_run(fs / "o").config.train.lr == 0.02 and hidden(fs) == set()


def test_a_checkpoint_on_a_full_disk_warns_and_the_run_goes_on(small_fs, tiny_run, monkeypatch):
    """The disk fills up after the first checkpoint: each later checkpoint is a one-line warning, training goes on; the
    run then completes or ends in one line with its last checkpoint intact, from which it resumes once there is room."""
    fs = small_fs("4m")
    argv = ["run", QUICK, *TINY, "train.epochs=30", "train.steps_per_epoch=200", "train.checkpoint_every=1", "--out", "o", "--quiet"]
    monkeypatch.chdir(fs)
    proc = start(argv, fs)
    marker = checkpoint_path(fs / "o") / "checkpoint.json"
    wait_until(marker.is_file, proc, "a checkpoint")
    fill(fs / "filler")
    while proc.poll() is None:  # keep the disk full: take what a failed checkpoint's cleanup gives back
        try:
            fill(fs / "filler")
        except OSError:
            pass
        time.sleep(0.005)
    rc, out, err = finish(proc)
    lines = err.strip().splitlines()
    assert "Traceback" not in err and rc in (0, EXIT_FAULT), (rc, err)
    warnings = [l for l in lines if l.startswith("warning: checkpoint after epoch ")]
    assert warnings and all(re.fullmatch(r"warning: checkpoint after epoch \d+ not written \(No space left on device\); "
                                         r"the previous checkpoint is kept", w) for w in warnings), warnings
    (fs / "filler").unlink()
    if rc == 0:  # the run dir fitted where the checkpoints did not
        assert lines == warnings and hidden(fs) == set()
        load_run(fs / "o")
        return
    assert lines[:-1] == warnings
    one_line(lines[-1], "studentspec: error: writing o: ", "No space left on device", "nothing was written to o", "--resume")
    assert hidden(fs) == {marker.parent.name} and not (fs / "o").exists()
    epoch = json.loads(marker.read_text())["epoch"]
    assert main([*argv, "--resume"]) == 0
    assert load_run(fs / "o").summary["resumed_from_epoch"] == epoch and hidden(fs) == set()


def test_a_checkpoint_too_big_for_the_disk_is_an_oserror_and_leaves_nothing(small_fs, tiny_run):
    """torch.save into a path reports a full disk as a RuntimeError; the store's writes must raise OSError (ENOSPC)."""
    import torch

    from studentspec.store.checkpoint import write_checkpoint

    fs = small_fs("64k")
    with pytest.raises(OSError) as got:
        write_checkpoint(fs / "o", load_run(tiny_run).config, epoch=1, state={"big": torch.zeros(1 << 17)}, tables={})  # 512 KiB
    assert got.value.errno == errno.ENOSPC and list(fs.iterdir()) == []


def test_a_checkpoint_that_cannot_be_written_costs_a_warning_not_the_run(ws, monkeypatch, capsys):
    """In-process: the second checkpoint fails; the run completes, the first checkpoint stayed as it was until then."""
    real, calls, seen = pipelines.write_checkpoint, [], []

    def flaky(out, cfg, *, epoch, state, tables):
        calls.append(epoch)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(out, cfg, epoch=epoch, state=state, tables=tables)

    real_remove = pipelines.remove_checkpoint

    def remove(out):
        seen.append(json.loads((checkpoint_path(out) / "checkpoint.json").read_text())["epoch"])
        real_remove(out)

    monkeypatch.setattr(pipelines, "write_checkpoint", flaky)
    monkeypatch.setattr(pipelines, "remove_checkpoint", remove)
    assert main(["run", QUICK, *TINY, "train.epochs=4", "train.checkpoint_every=1", "--out", "o", "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert calls == [1, 2, 3] and seen == [1]
    assert err == [f"warning: checkpoint after epoch {e} not written (No space left on device); the previous checkpoint is kept" for e in (2, 3)]
    load_run(ws / "o")
    assert hidden(ws) == set()


# ---------------------------------------------------------------- a read-only file system, a read-only or immutable old run


@pytest.mark.parametrize("old", [False, True], ids=["fresh", "overwrite"])
def test_a_read_only_file_system_is_one_line(old, small_fs, tiny_run, monkeypatch, capsys):
    fs = small_fs("4m")
    if old:
        shutil.copytree(tiny_run, fs / "o")
    remount(fs, "ro")
    monkeypatch.chdir(fs)
    before = snapshot(fs)
    rc = main(["run", QUICK, *TINY, "--out", "o", "--quiet", *(["--overwrite"] if old else [])])
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT, (rc, err)  # found before any work: the parent / the old run cannot be written
    one_line(err, "studentspec: error: ", "o", "read-only" if old else "not writable")
    assert snapshot(fs) == before


@contextmanager
def unwritable(path: Path, root: Path) -> Iterator[None]:
    """`path` made unwritable: `chattr +i` as root (modes do not stop root), else its write bits (a dir's whole tree) off.
    Afterwards everything under `root` is writable again (wherever the immutable file went), so tmp_path can be removed."""
    if os.geteuid() == 0:
        got = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True) if shutil.which("chattr") else None
        if got is None or got.returncode:
            pytest.skip(f"cannot make a file immutable here (chattr +i: {(got.stderr.strip() if got else 'not installed')[:100]})")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-R", "-i", str(root)], check=True, capture_output=True)
        return
    if path.is_file():
        pytest.skip("a read-only file in a writable dir can be replaced; only chattr +i (root) makes one that cannot")
    modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
    for p, mode in modes.items():
        p.chmod(mode & ~0o222)
    try:
        yield
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


@pytest.mark.parametrize("which", ["o", "o/weights.npz"], ids=["run-dir", "one-file"])
def test_overwrite_of_a_read_only_old_run_is_one_line_and_keeps_it(which, ws, tiny_run, capsys):
    shutil.copytree(tiny_run, ws / "o")
    before = snapshot(ws)
    with unwritable(ws / which, ws):
        rc = main(["run", QUICK, *TINY, "train.lr=0.02", "--out", "o", "--quiet", "--overwrite"])
        err = capsys.readouterr().err
        assert snapshot(ws) == before, "the old run changed, or something was left beside it"
    assert rc == EXIT_BAD_INPUT, (rc, err)  # found before any work (check_out: every part of the old run deletable)
    one_line(err, "studentspec: error: ", "o", "--overwrite refuses", "immutable" if os.geteuid() == 0 and which != "o" else "read-only")
    assert load_run(ws / "o").config.train.lr != 0.02


# ---------------------------------------------------------------- the line itself


@pytest.mark.parametrize("code,name,start", [
    (errno.ENAMETOOLONG, "o/" + "x" * 5000 + "/scalars.parquet", "studentspec: error: writing o: File name too long at "),
    (errno.EIO, "data/" + "y" * 300 + "/batch_1", "studentspec: error: "),  # not the output: the file alone is named
], ids=["output", "another-file"])
def test_a_fault_names_the_file_and_quotes_at_most_about_100_characters_of_a_path(code, name, start, ws, monkeypatch, capsys):
    def fault(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(ws / name))

    monkeypatch.setattr(pipelines, "write_run", fault)
    assert main(["run", QUICK, *TINY, "--out", "o", "--quiet"]) == EXIT_FAULT
    line = one_line(capsys.readouterr().err, start, f"{name[-20:]}: {os.strerror(code)}" if code == errno.EIO else "scalars.parquet",
                    "(nothing was written to o)")
    assert len(line) < 300 and hidden(ws) == set()
