"""Sweeps: a grid of configs -> jobs (one batched ensemble each) -> local worker processes.

`studentspec sweep CONFIG key=v1,v2 other=a,b --out DIR` expands the comma lists (commas
inside brackets do not split), splits each point's seeds into jobs of --ensemble-size seeds,
and runs every job into its own run dir DIR/jobs/<id>. DIR/sweep.json is the manifest. A job
is finished when its run dir exists (run dirs are written atomically), so re-running the same
command skips finished jobs and redoes the others.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import itertools
import json
import multiprocessing
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tqdm.auto import tqdm

from .config import ConfigError, load_config
from .store import StoreError, load_run, read_json, write_json

MANIFEST = "sweep.json"


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
            raise ConfigError(f"{item}: grid items must look like key=v1,v2")
        values = split_values(raw)
        if any(v.strip() == "" for v in values):
            raise ConfigError(f"{key}: empty value in the list {raw!r}")
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


def yaml_section(config: str | None) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The config file's optional `sweep:` section: {grid: {key: [values]}, zip: {key: [values], ...}}."""
    if config is None or not Path(config).is_file():
        return {}, {}
    section = (yaml.safe_load(Path(config).read_text()) or {}).get("sweep") or {}
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


def expand(config: str | None, grid: dict[str, list[str]], ensemble_size: int | None, zipped: dict[str, list[str]] | None = None) -> list[Job]:
    """Every job of the grid, each validated (a bad key or value raises ConfigError before anything runs)."""
    jobs = []
    for point in _points(grid, zipped or {}):
        overrides = [f"{k}={v}" for k, v in point.items()]
        cfg = load_config(config, overrides)
        size = ensemble_size or len(cfg.seeds)
        for i in range(0, len(cfg.seeds), size):
            seeds = cfg.seeds[i : i + size]
            key = json.dumps({"point": point, "seeds": seeds}, sort_keys=True)
            jobs.append(Job(f"{len(jobs):04d}-{hashlib.sha1(key.encode()).hexdigest()[:8]}", overrides, point, seeds))
    return jobs


def _run_job(config: str | None, job: dict[str, Any], out: str, threads: int) -> str:
    """Worker: train one job and write its run dir (atomically)."""
    import torch

    from .store import write_run
    from .train import train

    torch.set_num_threads(threads)
    cfg = load_config(config, [*job["overrides"], f"seeds={job['seeds']}"])
    write_run(train(cfg, progress=False), out, overwrite=True)
    return job["id"]


def _manifest(out: Path, config: str | None, grid: dict[str, list[str]], jobs: list[Job]) -> None:
    """Write the manifest, or check that an existing one describes the same sweep."""
    info = {"config": config, "config_text": Path(config).read_text() if config else "", "grid": grid, "jobs": [asdict(j) for j in jobs]}  # grid: command line + file grid; zip is in config_text
    path = out / MANIFEST
    if path.exists():
        old = read_json(path)
        if {k: old.get(k) for k in info} != info:
            raise StoreError(f"{path}: this directory holds another sweep (different config or grid); choose another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, info)


def run_sweep(config: str | None, items: list[str], out: str | Path, ensemble_size: int | None = None, workers: int = 1,
              threads: int = 1, dry_run: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every unfinished job of a sweep; returns {'done': [...], 'skipped': [...], 'failed': {id: error}}."""
    out = Path(out)
    file_grid, zipped = yaml_section(config)
    grid = file_grid | parse_grid(items)  # the command line wins over the file's sweep section
    jobs = expand(config, grid, ensemble_size, zipped)
    if dry_run:
        return {"jobs": jobs}
    _manifest(out, config, grid, jobs)
    for stale in (out / "jobs").glob(".*.partial-*"):  # staging dirs of jobs killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    todo = [j for j in jobs if not (out / "jobs" / j.id / "summary.json").is_file()]
    result: dict[str, Any] = {"done": [], "skipped": [j.id for j in jobs if j not in todo], "failed": {}}
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), disable=not progress, unit="job")
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    with cf.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx) as pool:
        futures = {pool.submit(_run_job, config, asdict(j), str(out / "jobs" / j.id), threads): j for j in todo}
        for fut in cf.as_completed(futures):
            job = futures[fut]
            try:
                result["done"].append(fut.result())
            except Exception as err:  # a failing job is reported; the others go on
                result["failed"][job.id] = f"{err.__class__.__name__}: {err}"
                tqdm.write(f"job {job.id} {job.point} seeds {job.seeds} failed: {err}")
            bar.update(1)
            bar.set_postfix(failed=len(result["failed"]), refresh=False)
    bar.close()
    return result


def load_sweep(path: str | Path) -> dict[str, pd.DataFrame]:
    """DataFrames 'scalars', 'teachers', 'students' over all finished jobs, with the swept keys as columns."""
    path = Path(path)
    manifest = read_json(path / MANIFEST)
    frames: dict[str, list[pd.DataFrame]] = {"scalars": [], "teachers": [], "students": []}
    for job in manifest["jobs"]:
        run_dir = path / "jobs" / job["id"]
        if not (run_dir / "summary.json").is_file():
            continue
        run = load_run(run_dir)
        for name, df in (("scalars", run.scalars), ("teachers", run.teachers), ("students", run.students)):
            df = df.copy()
            for key, raw in job["point"].items():
                df[key] = yaml.safe_load(raw) if not raw.startswith("[") else raw
            df["job"] = job["id"]
            frames[name].append(df)
    return {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in frames.items()}


def query(path: str | Path, sql: str) -> pd.DataFrame:
    """Run SQL (DuckDB, embedded) over a sweep's tables `scalars`, `teachers`, `students` (swept keys as columns)."""
    import duckdb

    tables = load_sweep(path)
    con = duckdb.connect()
    for name, df in tables.items():
        con.register(name, df)
    try:
        return con.execute(sql).df()
    except duckdb.Error as err:
        raise ConfigError(f"query: {str(err).splitlines()[0]}") from None


def job_table(jobs: list[Job]) -> str:
    """A plain-text table of jobs for --dry-run."""
    lines = [f"{'job':<14} {'seeds':<20} point"]
    lines += [f"{j.id:<14} {str(j.seeds):<20} {' '.join(j.overrides)}" for j in jobs]
    return "\n".join(lines)

