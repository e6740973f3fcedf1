"""Where sweep jobs run: a local process pool, a Ray cluster, or SLURM job arrays (submitit).

Every executor runs the same function, `run_job`, on the same tasks and yields (task, error)
pairs as jobs finish (error None on success), so a job's results do not depend on where it ran.
Run dirs are written by the job itself, atomically, under the sweep dir: Ray and SLURM need
that dir on a file system the workers share.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError

EXECUTORS = ("local", "ray", "slurm")


@dataclass(frozen=True)
class Member:
    """One job of a packed task: its id, overrides, seeds and run dir."""

    job_id: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    out: str


@dataclass(frozen=True)
class Task:
    """One job to run: its config file, overrides and seeds, the run dir to write, torch threads.

    A packed task (`packed`: two or more jobs whose configs differ only in build-only keys, mlp/pack.py) trains
    its members as one ensemble and writes each member's run dir; its own job_id, overrides, seeds and out are
    its first member's.
    """

    job_id: str
    config: str | None
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    out: str
    threads: int
    gpus: float = 0.0  # Ray: the GPU share this job asks for
    packed: tuple[Member, ...] = ()

    @property
    def members(self) -> tuple[Member, ...]:
        """The jobs this task runs: its packed members, or itself."""
        return self.packed or (Member(self.job_id, self.overrides, self.seeds, self.out),)


# what an executor yields as jobs finish, (task, error or None): a generator, whose close() stops its workers
Finished = Generator[tuple[Task, str | None], None, None]


def run_job(task: Task) -> str:
    """Train one job (a batched ensemble), or a packed task's members as one ensemble, and write each run dir
    atomically; returns the (first) job id."""
    import torch

    from .. import pipelines

    torch.set_num_threads(task.threads)
    if task.packed:
        cfgs = [pipelines.load_config(task.config, [*m.overrides, f"seeds={list(m.seeds)}"]) for m in task.packed]
        note = {"packed_with": [m.job_id for m in task.packed]}  # the jobs trained together; wall times are the pack's
        pipelines.write_packed(pipelines.train_packed(cfgs), cfgs, [m.out for m in task.packed], note)
        return task.job_id
    cfg = pipelines.load_config(task.config, [*task.overrides, f"seeds={list(task.seeds)}"])
    # an unfinished job continues from its checkpoint (train.checkpoint_every), if it wrote one
    pipelines.write_run(pipelines.train(cfg, progress=False, out=task.out, resume=True), task.out, overwrite=True)
    return task.job_id


def _error(err: BaseException) -> str:
    """One line: the exception class and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {text[0] if text else ''}"


def machine_workers(threads: int) -> int:
    """Worker processes that fit this machine at `threads` torch threads each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, threads))


DIED = "its worker process died (killed by the OS, e.g. out of memory, or by a signal)"


STOP_GRACE = 10.0  # seconds a worker gets to unwind its job after Ctrl-C before it is killed


def _die_with_parent(parent: int) -> None:
    """Pool initializer: on Linux, SIGKILL this worker when the sweep process ends, however it ends.

    Ctrl-C reaches every process of the terminal's group: the sweep process alone handles it (see _stop), and a
    worker ignores SIGINT; it unwinds its job on SIGTERM (its finally blocks remove its staging dirs) and ends quietly.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _unwind)


def _unwind(signum: int, frame: object) -> None:
    """A worker's SIGTERM: SystemExit, which unwinds a running job and ends an idle worker without a traceback."""
    raise SystemExit(128 + signum)


@contextmanager
def _sigint_held() -> Iterator[None]:
    """SIGINT ignored here while workers are spawned, so that they ignore it from their first instruction (an ignored
    signal stays ignored across exec); blocked too, so that a Ctrl-C meanwhile is delivered afterwards, not lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler if handler is not None else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _stop(pool: cf.ProcessPoolExecutor) -> None:
    """Stop a pool's workers now (Ctrl-C): SIGTERM lets each unwind its job, SIGKILL after STOP_GRACE seconds."""
    procs = list((pool._processes or {}).values())  # Python < 3.14 has no public way (terminate_workers)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)  # a worker that unwound its job then reads its end-of-work sentinel
    deadline = time.monotonic() + STOP_GRACE
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
    pool.shutdown(wait=True, cancel_futures=True)


def _pool(
    queue: list[Task], workers: int, fn: Callable[[Task], str]
) -> Generator[tuple[Task, str | None], None, list[Task]]:
    """Run the tasks of `queue` (consumed) in one pool, at most `workers` in flight; yield (task, error) as they finish.

    Returns the tasks in flight when a worker died (the pool is then broken), else [].
    """
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    with cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        running: dict[cf.Future[str], Task] = {}
        try:
            while queue or running:
                while queue and len(running) < workers:
                    task = queue.pop(0)
                    with _sigint_held():  # submit may spawn a worker
                        running[pool.submit(fn, task)] = task
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    err = fut.exception()
                    if isinstance(err, BrokenProcessPool):
                        return list(running.values())
                    yield running.pop(fut), None if err is None else _error(err)
        except (KeyboardInterrupt, GeneratorExit):  # Ctrl-C, or the caller gave up: the pool would wait for every job
            _stop(pool)
            raise
    return []


def local(tasks: list[Task], workers: int, fn: Callable[[Task], str] = run_job) -> Finished:
    """Run tasks in a pool of spawned worker processes that die with this process.

    A worker killed from outside (OOM killer, SIGKILL) breaks its pool: the tasks then in flight
    are each retried alone in a fresh pool (a packed task member by member, unpacked: a pack is the
    likeliest to have run out of memory), so only one that kills its worker again fails; the
    pending tasks go on in a new pool.
    """
    queue = list(tasks)
    while queue:
        for task in (yield from _pool(queue, max(1, workers), fn)):
            for alone in unpacked(task):
                if (yield from _pool([alone], 1, fn)):
                    yield alone, DIED


def unpacked(task: Task) -> list[Task]:
    """A packed task's members as tasks of their own (a plain task: itself)."""
    return [Task(m.job_id, task.config, m.overrides, m.seeds, m.out, task.threads, task.gpus) for m in task.members]


def check_address(address: str, timeout: float = 3.0) -> None:
    """Raise ConfigError unless something listens at HOST:PORT (checked before Ray waits on it)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--address: expected HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(f"--address: cannot reach a Ray cluster at {address} ({err.strerror or err})") from None


def preflight(executor: str, address: str | None, slurm_options: dict[str, Any]) -> None:
    """Raise ConfigError for an executor that cannot start (missing package, unreachable address, no sbatch)."""
    if executor == "ray":
        try:
            import ray as ray_lib  # noqa: F401
        except ImportError:
            raise ConfigError("--executor ray: Ray is not installed (pip install 'studentspec[ray]')") from None
        if address:
            check_address(address)
    elif executor == "slurm":
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--executor slurm: submitit is not installed (pip install 'studentspec[slurm]')"
            ) from None
        cluster = slurm_options.get("cluster", "slurm")
        if cluster not in ("slurm", "local"):
            raise ConfigError(f"--slurm cluster: must be 'slurm' or 'local', got {cluster!r}")
        if cluster == "slurm" and not any(
            (Path(p) / "sbatch").exists() for p in os.environ.get("PATH", "").split(os.pathsep)
        ):
            raise ConfigError(
                "--executor slurm: sbatch not found on PATH (pass "
                "--slurm cluster=local to run through submitit locally)"
            )
        with tempfile.TemporaryDirectory(prefix="studentspec-submitit-") as folder:
            _slurm_executor(Path(folder), slurm_options, 1)  # validates the parameters


def _slurm_executor(folder: Path, options: dict[str, Any], threads: int) -> Any:
    """A submitit AutoExecutor with our defaults and the user's parameters (bad ones -> ConfigError)."""
    import submitit

    options = dict(options)
    executor = submitit.AutoExecutor(folder=folder, cluster=options.pop("cluster", "slurm"))
    try:
        executor.update_parameters(**({"cpus_per_task": threads, "timeout_min": 24 * 60} | options))
    except (ValueError, TypeError, NameError) as err:  # submitit names unknown parameters with NameError
        raise ConfigError(f"--slurm: {_error(err)}") from None
    return executor


def ray(tasks: list[Task], address: str | None, workers: int) -> Finished:
    """Submit tasks to a Ray cluster (`address` HOST:PORT) or to a local Ray instance when None.

    Each task asks for `threads` CPUs and `gpus` GPUs (a fraction lets several ensembles share one device).
    """
    import ray as ray_lib

    preflight("ray", address, {})
    if address:
        try:
            ray_lib.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError) as err:  # e.g. not a Ray head, or an authentication mismatch
            raise ConfigError(f"--address: could not join the Ray cluster at {address} ({_error(err)})") from None
    else:
        ray_lib.init(
            num_cpus=workers * max(t.threads for t in tasks) if tasks else 1,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        remote = ray_lib.remote(run_job)
        refs = {remote.options(num_cpus=t.threads, num_gpus=t.gpus).remote(t): t for t in tasks}
        pending = list(refs)
        while pending:
            ready, pending = ray_lib.wait(pending, num_returns=1)
            try:
                ray_lib.get(ready[0])
                yield refs[ready[0]], None
            except Exception as err:  # noqa: BLE001 - a failing job is reported, the others go on
                yield refs[ready[0]], _error(getattr(err, "cause", None) or err)
    finally:
        ray_lib.shutdown()


def slurm(tasks: list[Task], folder: Path, options: dict[str, Any], workers: int) -> Finished:
    """Submit tasks as one SLURM job array through submitit; `options` are submitit parameters.

    options['cluster'] = 'local' runs the array through submitit's local executor (no SLURM),
    `workers` jobs at a time; on SLURM the scheduler decides (see slurm_array_parallelism).
    """
    import submitit

    preflight("slurm", None, options)
    if not tasks:
        return
    executor = _slurm_executor(folder, options, max(t.threads for t in tasks))
    if options.get("cluster") != "local":
        jobs = executor.map_array(run_job, tasks)
        by_id = {job.job_id: t for job, t in zip(jobs, tasks)}
        for job in submitit.helpers.as_completed(jobs, poll_frequency=15.0):
            yield by_id[job.job_id], _submitit_error(job)
        return
    # submitit's local executor starts every submitted job at once: keep `workers` running
    queue, running = list(tasks), dict[Any, Task]()  # submitit job -> its task
    while queue or running:
        while queue and len(running) < workers:
            task = queue.pop(0)
            running[executor.submit(run_job, task)] = task
        for job in [j for j in running if j.done()]:
            yield running.pop(job), _submitit_error(job)
        time.sleep(0.2)


def _submitit_error(job: Any) -> str | None:
    """None for a finished job; the last line of its wrapped traceback (the actual error) for a failed one."""
    err = job.exception()
    return None if err is None else str(err).strip().splitlines()[-1]
