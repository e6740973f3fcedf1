"""Sweeps: a grid of configs -> jobs (one batched ensemble each) -> local worker processes.

`studentspec sweep CONFIG key=v1,v2 other=a,b --out DIR` expands the comma lists (commas
inside brackets do not split), splits each point's seeds into jobs of --ensemble-size seeds,
and runs every job into its own run dir DIR/jobs/<id> on an executor (executors.py: local
process pool, Ray, SLURM through submitit). DIR/sweep.json is the manifest. A job
is finished when its run dir exists (run dirs are written atomically), so re-running the same
command skips finished jobs and redoes the others.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import filelock
import pandas as pd
import yaml
from tqdm.auto import tqdm

from .. import pipelines
from ..config import Config, ConfigError, clip, config_maker, parse_yaml, quote, read_mapping
from ..store import StoreError, check_resumable, claim_resumable, load_run, read_json, remove_leftovers, write_json
from ..store.record import COLUMNS, check_columns
from . import executors

MANIFEST = "sweep.json"
LOCK = ".sweep.lock"
# Every point is validated and every job gets a manifest entry, a table row and (when run) a process and a run dir:
# past WARN_JOBS a one-line warning says so; past MAX_JOBS (about two minutes of validation alone) a sweep is refused.
WARN_JOBS = 10_000
MAX_JOBS = 1_000_000


def split_values(raw: str) -> list[str]:
    """Split 'a,b,[1,2]' at the commas outside brackets/braces: ['a', 'b', '[1,2]']."""
    parts, depth, current = [], 0, ""
    for ch in raw:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """'key=v1,v2' items -> {key: [raw values]} (one value = a plain override)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{clip(item)}: grid items must look like key=v1,v2")
        values = split_values(raw)
        if any(v.strip() == "" for v in values):
            raise ConfigError(f"{clip(key)}: empty value in the list {quote(raw)}")
        grid[key] = values
    return grid


@dataclass
class Job:
    """One batched ensemble: the overrides of its grid point and its chunk of seeds."""

    id: str
    overrides: list[str]
    point: dict[str, str]
    seeds: list[int]


def _raw(value: Any) -> str:
    """A YAML value back to override text (flow style, e.g. [10, 20] or {0: 0.2, 20: 0.1})."""
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 20).removesuffix("\n...\n").strip()


def yaml_section(
    config: str | None, tree: dict[str, Any] | None = None
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The config file's optional `sweep:` section: {grid: {key: [values]}, zip: {key: [values], ...}} (from its
    mapping `tree` when given: the file is read once)."""
    if tree is None:
        if config is None or not Path(config).is_file():
            return {}, {}
        tree = read_mapping(config)
    section = tree.get("sweep") or {}
    if not isinstance(section, dict) or set(section) - {"grid", "zip"}:
        raise ConfigError("sweep: must be a mapping with 'grid' and/or 'zip' sections")
    out = []
    for part in ("grid", "zip"):
        entries = section.get(part) or {}
        if not isinstance(entries, dict) or any(not isinstance(v, list) or not v for v in entries.values()):
            raise ConfigError(f"sweep.{part}: must map keys to non-empty lists of values")
        out.append({k: [_raw(v) for v in vals] for k, vals in entries.items()})
    if len({len(v) for v in out[1].values()}) > 1:
        raise ConfigError("sweep.zip: every list must have the same length")
    return out[0], out[1]


def _points(grid: dict[str, list[str]], zipped: dict[str, list[str]]) -> list[dict[str, str]]:
    """The product of the grid lists, times the zipped lists taken in step."""
    zip_rows = [dict(zip(zipped, vals)) for vals in zip(*zipped.values())] if zipped else [{}]
    keys = list(grid)
    return [dict(zip(keys, vals)) | row for vals in itertools.product(*(grid[k] for k in keys)) for row in zip_rows]


def _size(grid: dict[str, list[str]], zipped: dict[str, list[str]]) -> int:
    """How many points _points gives, without making them."""
    return math.prod(len(v) for v in grid.values()) * (min(len(v) for v in zipped.values()) if zipped else 1)


def expand(
    config: str | None,
    grid: dict[str, list[str]],
    ensemble_size: int | None,
    zipped: dict[str, list[str]] | None = None,
    *,
    configs: dict[str, Config] | None = None,
    tree: dict[str, Any] | None = None,
    progress: bool = False,
) -> list[Job]:
    """Every job of the grid, each validated (a bad key or value raises ConfigError before anything runs).

    The config file is read once (or its mapping `tree` is used) and each point validated once; `configs`, when given,
    receives every job's Config (its own seeds) by job id, so that packing, ordering and the cost estimate need not
    validate again. `progress`: a bar on stderr once expanding takes over a second.
    """
    zipped = zipped or {}
    if (n := _size(grid, zipped)) > MAX_JOBS:  # before making a single point
        raise ConfigError(
            f"sweep: the grid has {n} points, more than the "
            f"{MAX_JOBS} jobs a sweep may have (split it into several sweeps)"
        )
    make = config_maker(config, None if tree is None else {k: v for k, v in tree.items() if k != "sweep"})
    jobs: list[Job] = []
    with tqdm(
        total=n, disable=not progress, delay=1.0, desc="validating the grid", unit="point", file=sys.stderr, leave=False
    ) as bar:
        for point in _points(grid, zipped):
            overrides = [f"{k}={v}" for k, v in point.items()]
            cfg = make(overrides)
            p = pipelines.pipeline(cfg)
            size = ensemble_size or len(cfg.seeds)
            for i in range(0, len(cfg.seeds), size):
                seeds = cfg.seeds[i : i + size]
                job_cfg = cfg if len(seeds) == len(cfg.seeds) else cfg.model_copy(update={"seeds": seeds})
                p.check_memory(job_cfg)  # a job that cannot fit fails the sweep up front
                key = json.dumps({"point": point, "seeds": seeds}, sort_keys=True)
                jobs.append(
                    Job(f"{len(jobs):04d}-{hashlib.sha1(key.encode()).hexdigest()[:8]}", overrides, point, seeds)
                )
                if len(jobs) > MAX_JOBS:
                    raise ConfigError(
                        f"sweep: more than {MAX_JOBS} jobs (use fewer seeds "
                        "per point, a larger --ensemble-size, or several sweeps)"
                    )
                if configs is not None:
                    configs[jobs[-1].id] = job_cfg
            bar.update()
    return jobs


def _configs(config: str | None, jobs: list[Job], configs: dict[str, Config] | None) -> dict[str, Config]:
    """Every job's Config by id: `configs` as given (expand filled
    it), else each validated now from one reading of the file."""
    if configs is not None:
        return configs
    make = config_maker(config)
    out = {}
    for j in jobs:
        out[j.id] = make([*j.overrides, f"seeds={j.seeds}"])
        pipelines.pipeline(out[j.id])
    return out


def _manifest(out: Path, config: str | None, grid: dict[str, list[str]], jobs: list[Job]) -> None:
    """Write the manifest, or check that an existing one describes the same sweep."""
    info = {
        "config": config,
        "config_text": Path(config).read_text() if config else "",
        "grid": grid,
        "jobs": [asdict(j) for j in jobs],
    }  # grid: command line + file grid; zip is in config_text
    path = out / MANIFEST
    if path.exists():
        old = read_json(path)
        if {k: old.get(k) for k in info if k != "config"} != {
            k: v for k, v in info.items() if k != "config"
        }:  # any path to the same config
            raise StoreError(
                f"{path}: this directory holds another sweep (different config or grid); choose another --out"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, info)


# --pack auto: jobs whose configs differ only in build-only keys (pipelines.pack_key; e.g. every
# teacher.decay of one (m, multi) point) train as one ensemble of at most AUTO_PACK_SEEDS seeds whose memory
# floor (mlp/memory.py) stays under AUTO_PACK_BYTES. Why: packing pays per step (the step's fixed Python/kernel-call
# cost is shared by more seeds) and per job (process start, imports, write), and costs nothing in results (bitwise
# the unpacked numbers); the floor under 1 GiB keeps a worker's measured RSS near the unpacked paper grid's.
# Not the default (SweepOptions.pack=0): on the 2-core machine the copy of the members' inputs cost more than the
# shared step overhead saved (BENCHMARKS.md, "Sweep packing").
AUTO_PACK_SEEDS = 256
AUTO_PACK_BYTES = 2**30


def pack_jobs(
    config: str | None, jobs: list[Job], pack: int | None = None, configs: dict[str, Config] | None = None
) -> list[list[Job]]:
    """Group jobs into tasks (manifest order kept): jobs whose configs have one pipelines.pack_key train together,
    at most `pack` seeds per task (None: auto, see AUTO_PACK_SEEDS / AUTO_PACK_BYTES; 0 or 1: no packing).
    `configs`: the jobs' Configs by id (expand's), else validated here."""
    if pack is not None and pack <= 1:
        return [[j] for j in jobs]
    cap = AUTO_PACK_SEEDS if pack is None else pack
    cfgs = _configs(config, jobs, configs)

    def fits(group: list[Job]) -> bool:
        if sum(len(j.seeds) for j in group) > cap:
            return False
        packed = pipelines.packed_config([cfgs[j.id] for j in group])
        if pack is None:
            floor = pipelines.memory_floor(packed)
            return floor is not None and floor <= AUTO_PACK_BYTES
        try:  # an explicit --pack N still never packs past this machine's memory
            pipelines.pipeline(packed).check_memory(packed)
        except ConfigError:
            return False
        return True

    groups: list[list[Job]] = []
    filling: dict[str, list[Job]] = {}  # pack key -> the group being filled
    for job in jobs:
        key = pipelines.pack_key(cfgs[job.id])
        group = filling.get(key) if key is not None else None
        if group is not None and fits([*group, job]):
            group.append(job)
            continue
        groups.append([job])
        if key is not None:
            filling[key] = groups[-1]
    return groups


def longest_first(
    config: str | None, groups: list[list[Job]], configs: dict[str, Config] | None = None
) -> list[list[Job]]:
    """Tasks in decreasing order of their FLOP count (cost.job_cost; a pipeline it does not model first), so
    the workers finish together: a large pack started last kept one worker busy alone (BENCHMARKS.md, "Sweep
    packing"). `configs`: the jobs' Configs by id (expand's), else validated here."""
    from .cost import job_cost

    cfgs = _configs(config, [j for g in groups for j in g], configs)

    def flops(group: list[Job]) -> float:
        total = 0.0
        for job in group:
            try:
                c = job_cost(cfgs[job.id])
            except ConfigError:
                return float("inf")
            total += c.seed_steps / len(job.seeds) * c.step_flops + c.evals * c.eval_flops
        return total

    return sorted(groups, key=flops, reverse=True)  # stable: equal costs keep the manifest order


def pack_table(groups: list[list[Job]]) -> str:
    """The packing for --dry-run: which jobs train together, seeds per task."""
    sizes = sorted({len(g) for g in groups}, reverse=True)
    head = (
        f"packing: {sum(len(g) for g in groups)} jobs in {len(groups)} tasks "
        f"({', '.join(f'{sum(len(g) == k for g in groups)} x {k} job(s)' for k in sizes)})"
    )
    lines = [head] + [
        f"  task {i + 1:<4} {sum(len(j.seeds) for j in g):>4} seeds: {' '.join(j.id for j in g)}"
        for i, g in enumerate(groups)
        if len(g) > 1
    ]
    return "\n".join(lines)


def _gpus(config: str | None, job: Job, gpus_per_job: float | None, configs: dict[str, Config] | None = None) -> float:
    """The GPU share a job asks Ray for: as given, else 0.25 on a CUDA device and 0 on CPU."""
    if gpus_per_job is not None:
        return gpus_per_job
    return 0.25 if _configs(config, [job], configs)[job.id].train.device.startswith("cuda") else 0.0


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs (the grid says what it computes); out-of-range values raise a one-line ConfigError when built.

    `workers` defaults to the machine's cores / threads. `gpus_per_job` (Ray) defaults to 0.25 for jobs on a CUDA
    device (four ensembles share a GPU), else 0. `pack`: at most this many seeds per task of packed jobs (pack_jobs;
    None = auto, 0 or 1 = off, the default); the unfinished jobs are packed when the sweep runs, so a resumed sweep may
    pack them differently. `address` (Ray) and `slurm` (submitit parameters) go to the executor.
    """

    ensemble_size: int | None = None  # seeds per job (None: all seeds of a point in one job)
    workers: int | None = None
    threads: int = 1  # torch threads per job
    dry_run: bool = False  # expand, validate and pack only
    progress: bool = True
    executor: str = "local"  # one of executors.EXECUTORS
    address: str | None = None
    gpus_per_job: float | None = None
    slurm: dict[str, Any] | None = None
    pack: int | None = 0

    def __post_init__(self) -> None:
        if self.executor not in executors.EXECUTORS:
            raise ConfigError(f"--executor: must be one of {executors.EXECUTORS}, got {quote(self.executor)}")
        if (
            self.threads < 1
            or (self.workers is not None and self.workers < 1)
            or (self.gpus_per_job is not None and self.gpus_per_job < 0)
        ):
            raise ConfigError("--threads and --workers must be >= 1, --gpus-per-job >= 0")
        if self.ensemble_size is not None and self.ensemble_size < 1:
            raise ConfigError(f"--ensemble-size: must be >= 1, got {self.ensemble_size}")
        if self.pack is not None and self.pack < 0:
            raise ConfigError(f"--pack: must be auto or a number of seeds >= 0, got {self.pack}")


def run_sweep(
    config: str | None, items: list[str], out: str | Path, options: SweepOptions | None = None
) -> dict[str, Any]:
    """Run every unfinished job of a sweep as `options` say (None: SweepOptions()).

    Returns {'jobs': [...], 'done': [...], 'skipped': [...], 'failed': {id: error}, 'wall_time': s,
    'packs': [[job ids]]} ({'jobs': [...], 'packs': [[Job]], 'configs': [each job's Config]} for a dry run).
    The config file is read once and each grid point validated once; past WARN_JOBS jobs a warning goes to stderr.
    """
    options = SweepOptions() if options is None else options
    out = Path(out)
    workers = options.workers or executors.machine_workers(options.threads)
    tree = read_mapping(config) if config is not None else {}  # the one reading of the file
    file_grid, zipped = yaml_section(config, tree)
    grid = file_grid | parse_grid(items)  # the command line wins over the file's sweep section
    configs: dict[str, Config] = {}
    jobs = expand(config, grid, options.ensemble_size, zipped, configs=configs, tree=tree, progress=options.progress)
    if len(jobs) > WARN_JOBS:
        print(
            f"studentspec: warning: this sweep has {len(jobs)} jobs (over {WARN_JOBS}); each is a process and a run "
            "dir: fewer, larger ones (more seeds per job with --ensemble-size, or --pack auto) run faster",
            file=sys.stderr,
        )
    if options.dry_run:
        return {
            "jobs": jobs,
            "packs": pack_jobs(config, jobs, options.pack, configs),
            "configs": [configs[j.id] for j in jobs],
        }
    executors.preflight(options.executor, options.address, options.slurm or {})  # before anything is written
    check_resumable(out, MANIFEST, "sweep")
    claim_resumable(out, "sweep")  # created and marked first: studentspec's own from the first instant
    with _lock(out):
        return _execute(out, config, grid, jobs, options=options, workers=workers, configs=configs)


@contextmanager
def _lock(out: Path) -> Iterator[None]:
    """Hold DIR/.sweep.lock while a sweep runs: a second sweep into DIR exits 2 naming the holder.

    An OS file lock (flock): it goes with the process, so a killed sweep leaves no stale lock.
    """
    lock, holder = filelock.FileLock(str(out / LOCK), timeout=0), out / f"{LOCK}.holder"
    try:
        lock.acquire()
    except filelock.Timeout:
        who = holder.read_text().strip() if holder.is_file() else "another process"
        raise StoreError(
            f"{out}: another sweep is running into this directory ({who}); wait for it or choose another --out"
        ) from None
    try:
        holder.write_text(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def _execute(
    out: Path,
    config: str | None,
    grid: dict[str, list[str]],
    jobs: list[Job],
    *,
    options: SweepOptions,
    workers: int,
    configs: dict[str, Config] | None = None,
) -> dict[str, Any]:
    """run_sweep's part under the lock: manifest, stale staging dirs, then the unfinished jobs, packed into tasks
    (`workers`: resolved from options; `configs`: every job's Config by id, from expand)."""
    _manifest(out, config, grid, jobs)
    remove_leftovers(out / "jobs")  # staging dirs of jobs killed mid-write
    todo = [j for j in jobs if not _finished(out / "jobs" / j.id)]
    configs = _configs(config, todo, configs)
    groups = longest_first(config, pack_jobs(config, todo, options.pack, configs), configs)
    tasks = []
    for group in groups:
        j = group[0]
        members = tuple(
            executors.Member(m.id, tuple(m.overrides), tuple(m.seeds), str(out / "jobs" / m.id)) for m in group
        )
        tasks.append(
            executors.Task(
                j.id,
                config,
                tuple(j.overrides),
                tuple(j.seeds),
                str(out / "jobs" / j.id),
                options.threads,
                _gpus(config, j, options.gpus_per_job, configs),
                members if len(group) > 1 else (),
            )
        )
    if options.executor == "local":
        finished = executors.local(tasks, workers)
    elif options.executor == "ray":
        finished = executors.ray(tasks, options.address, workers)
    else:
        finished = executors.slurm(tasks, out / "slurm", options.slurm or {}, workers)
    by_id = {j.id: j for j in jobs}
    unfinished = {j.id for j in todo}  # a set: `j not in todo` compared every pair of 100,000 jobs
    result: dict[str, Any] = {
        "jobs": jobs,
        "done": [],
        "skipped": [j.id for j in jobs if j.id not in unfinished],
        "failed": {},
        "packs": [[j.id for j in g] for g in groups],
    }
    start = time.perf_counter()
    bar = tqdm(
        total=len(jobs), initial=len(jobs) - len(todo), disable=not options.progress, unit="job", dynamic_ncols=True
    )
    with (
        closing(finished) if hasattr(finished, "close") else nullcontext()
    ):  # Ctrl-C here stops the workers now, not at collection
        for task, error in finished:
            for member in task.members:
                # a failed pack may have written some members before it failed: those are finished
                if error is None or _finished(Path(member.out)):
                    result["done"].append(member.job_id)
                else:  # a failing job is reported; the others go on
                    result["failed"][member.job_id] = error
                    job = by_id[member.job_id]
                    tqdm.write(
                        f"job {job.id} failed ({' '.join(job.overrides) or 'base config'}, seeds {job.seeds}): {error}"
                    )
                bar.update(1)
            bar.set_postfix(failed=len(result["failed"]), refresh=False)
    bar.close()
    result["wall_time"] = time.perf_counter() - start
    return result


def summary_table(result: dict[str, Any]) -> str:
    """The short table printed after a sweep: jobs and seeds per state, wall time."""
    jobs = {j.id: j for j in result["jobs"]}
    rows = [
        ("finished now", result["done"]),
        ("already finished", result["skipped"]),
        ("failed", list(result["failed"])),
    ]
    lines = [f"{'state':<18} {'jobs':>6} {'seeds':>7}"]
    lines += [f"{name:<18} {len(ids):>6} {sum(len(jobs[i].seeds) for i in ids):>7}" for name, ids in rows]
    lines.append(
        f"{'total':<18} {len(jobs):>6} "
        f"{sum(len(j.seeds) for j in jobs.values()):>7}   wall time {result['wall_time']:.1f} s"
    )
    return "\n".join(lines)


def load_sweep(path: str | Path) -> dict[str, pd.DataFrame]:
    """DataFrames 'scalars', 'teachers', 'students' over all finished jobs, with the swept keys as columns
    (list- and dict-valued keys as their override text: config.parse_yaml gives the value back)."""
    path = Path(path)
    frames: dict[str, list[pd.DataFrame]] = {"scalars": [], "teachers": [], "students": []}
    for job, run_dir in _finished_jobs(path):
        run = load_run(run_dir)
        for name, df in (("scalars", run.scalars), ("teachers", run.teachers), ("students", run.students)):
            df = df.copy()
            for key, raw in job["point"].items():
                df[key] = _column_value(raw)
            df["job"] = job["id"]
            frames[name].append(df)
    return {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in frames.items()}


def _column_value(raw: str) -> Any:
    """A swept value as a table cell: scalars parsed, lists and dicts (lr schedules) kept as their override
    text, which yaml.safe_load turns back into the value (pandas would align a dict's keys with the row index)."""
    value = parse_yaml(raw)
    return raw if isinstance(value, (list, dict)) else value


def _finished(run_dir: Path) -> bool:
    """A job is finished when its run dir loads; a corrupt one is redone (and replaced: it is ours)."""
    if not (run_dir / "summary.json").is_file():
        return False
    try:
        load_run(run_dir)
    except StoreError:
        return False
    return True


def _finished_jobs(path: Path) -> list[tuple[dict[str, Any], Path]]:
    """(job record, run dir) of every finished job of a sweep, in manifest order; the manifest is checked against its
    schema (store/schemas.py: every job id a plain name, so
    jobs/<id> lies inside the sweep) and no job dir may be a link."""
    if not (path / MANIFEST).is_file():
        raise StoreError(f"{path}: not a sweep directory (no {MANIFEST}; create one with `studentspec sweep`)")
    manifest = read_json(path / MANIFEST)
    for link in (path / "jobs", *(path / "jobs" / job["id"] for job in manifest["jobs"])):
        if link.is_symlink():  # studentspec writes job dirs in place: a link leads out of the sweep
            raise StoreError(f"{link}: a link, not a job dir studentspec wrote; a sweep reads only its own dirs")
    return [
        (job, path / "jobs" / job["id"])
        for job in manifest["jobs"]
        if (path / "jobs" / job["id"] / "summary.json").is_file()
    ]


def query(path: str | Path, sql: str) -> pd.DataFrame:
    """Run SQL (DuckDB, embedded) over a sweep's tables `scalars`, `teachers`, `students` (swept keys as columns).

    DuckDB reads the jobs' Parquet files into these tables, then external access is switched off
    and the configuration locked: the query sees only the sweep and can read or write no file.
    """
    import duckdb

    path = Path(path)
    jobs = _finished_jobs(path)
    if not jobs:
        raise StoreError(f"{path}: the sweep has no finished job to query yet")
    con = duckdb.connect(":memory:")
    for name in ("scalars", "teachers", "students"):
        parts, params = [], []
        for job, run_dir in jobs:
            file = run_dir / f"{name}.parquet"
            if not file.is_file():
                raise StoreError(f"{file}: missing")
            check_columns(file, COLUMNS[name])  # DuckDB would unite a text seed column with the others' numbers
            cols = []
            for key, raw in job["point"].items():
                cols.append(f'? AS "{key.replace(chr(34), chr(34) * 2)}"')
                params.append(_column_value(raw))
            parts.append(f"SELECT *, {', '.join([*cols, '? AS job'])} FROM read_parquet(?)")
            params += [job["id"], str(file)]
        try:
            con.execute(f"CREATE TABLE {name} AS " + " UNION ALL BY NAME ".join(parts), params)
        except duckdb.Error as err:
            raise StoreError(f"{path}: cannot read the {name} tables ({str(err).splitlines()[0]})") from None
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    try:
        return con.execute(sql).df()
    except duckdb.Error as err:
        raise ConfigError(f"query: {str(err).splitlines()[0]}") from None


def job_table(jobs: list[Job]) -> str:
    """A plain-text table of jobs for --dry-run."""
    lines = [f"{'job':<14} {'seeds':<20} point"]
    lines += [f"{j.id:<14} {str(j.seeds):<20} {' '.join(j.overrides)}" for j in jobs]
    return "\n".join(lines)
