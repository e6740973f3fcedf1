"""Sweep executors: per-job overhead on many tiny jobs, and a 72-configuration two-layer grid end to end.

overhead: N tiny jobs (d=5, C=3, 40 samples, no training steps: build + one evaluation + write)
through each executor. Per-job overhead = (wall x workers - sum of the jobs' own train() time) / N,
i.e. what the executor, process start-up, imports and the run-dir write add to each job.
Ray starts a local instance inside the measurement (its start-up is part of the figure and is
also printed on its own); submitit uses its local executor.

grid: docs/model.md 4.1's 72 configurations (m in {5,10,20} x multi in {1,2,5,10} x p in
{0,..,2.5}) at a reduced scale (configs/two_layer_quick.yaml with d=C=20, 4 seeds, 10 epochs
of 1000 steps) through the local executor; prints wall time, jobs/s and seed-steps/s.

project: the paper's full two-layer grid (72 configs x 32 seeds x 1e5 steps, evaluation every
1000 steps) projected from a measured subset: the 12 (m, multi) points at p=1 (the decay p does
not change the cost) each train 3 paper-scale epochs in a pool of `workers` processes; from the
evaluation timestamps, one epoch (1000 steps + its evaluation) = (t_eval3 - t_eval1) / 2 and the
fixed cost = build + first evaluation; a full job = fixed + 100 epochs; the grid = 6 x the 12
jobs, spread over the workers longest first. With packing (`--pack`, as `sweep --pack`: auto by
default) the six decays of a point train as tasks of k x 32 seeds (k = how many jobs the packing
rule lets share a task); a point with k > 1 is measured at S = 32 k, its task costs k x the fixed
cost + 100 of those epochs, and the grid = 6 / k such tasks per point.

--pack 0 turns packing off in `grid` and `project` (the "before" figures).

    python benchmarks/bench_sweep.py overhead --jobs 100
    python benchmarks/bench_sweep.py grid [--pack 0]
    python benchmarks/bench_sweep.py project [--pack 0|N]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

from studentspec.sweep.grid import SweepOptions, run_sweep

TINY = ["input_dim=5", "output_dim=3", "teacher.widths=[2]", "data.n_train=40", "data.n_eval=20", "train.epochs=0", "eval.grad_norm=false"]
GRID = ["teacher.widths=[5],[10],[20]", "student.multi=1,2,5,10", "teacher.decay=0,0.5,1,1.5,2,2.5",
        "seeds=[1,2,3,4]", "train.epochs=10", "eval.every=2"]


def _job_seconds(out: Path) -> float:
    """Sum of the jobs' own train() wall times (summary.json); a pack's (its members share it) counted once."""
    total = 0.0
    for p in (out / "jobs").glob("*/summary.json"):
        info = json.loads(p.read_text())
        if info.get("packed_with", [p.parent.name])[0] == p.parent.name:
            total += info["wall_time_s"]
    return total


def overhead(n_jobs: int, workers: int, executors: list[str]) -> None:
    """Per-job overhead of each executor on n_jobs tiny jobs."""
    seeds = ",".join(f"[{i}]" for i in range(1, n_jobs + 1))
    for name in executors:
        root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        extra = {"slurm": {"cluster": "local"}} if name == "slurm" else {}
        t0 = time.perf_counter()
        if name == "ray":
            import ray

            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            startup = time.perf_counter() - t0
            ray.shutdown()  # run_sweep starts its own instance; this only times start-up
            t0 = time.perf_counter()
        options = SweepOptions(ensemble_size=1, workers=workers, progress=False, executor=name, **extra)
        res = run_sweep(None, [f"seeds={seeds}", *TINY], root, options)
        wall = time.perf_counter() - t0
        assert len(res["done"]) == n_jobs and not res["failed"], res["failed"]
        inside = _job_seconds(root)
        per_job = (wall * workers - inside) / n_jobs
        note = f" (incl. starting a local Ray instance, {startup:.1f} s on its own)" if name == "ray" else ""
        print(f"{name:<6} {n_jobs} jobs on {workers} workers: wall {wall:.1f} s, {n_jobs / wall:.2f} jobs/s, "
              f"jobs' own time {inside:.1f} s, overhead per job {per_job:.2f} s{note}", flush=True)
        shutil.rmtree(root, ignore_errors=True)


def grid(workers: int, pack: int | None = None) -> None:
    """The 72-configuration two-layer grid at reduced scale, end to end (`pack` as SweepOptions': None = auto)."""
    root = Path(tempfile.mkdtemp(prefix="bench-grid-"))
    t0 = time.perf_counter()
    res = run_sweep("configs/two_layer_quick.yaml", GRID, root, SweepOptions(workers=workers, progress=False, pack=pack))
    wall = time.perf_counter() - t0
    assert len(res["done"]) == 72 and not res["failed"], res["failed"]
    seed_steps = 72 * 4 * 10 * 1000
    inside = _job_seconds(root)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"72 configs x 4 seeds x 1e4 steps on {workers} workers, {len(res['packs'])} tasks (--pack {'auto' if pack is None else pack}): "
          f"wall {wall:.1f} s ({wall / 60:.1f} min), "
          f"{72 / wall:.2f} jobs/s, {seed_steps / wall:.0f} seed-steps/s, jobs' own time {inside:.1f} s "
          f"(executor share {1 - inside / (wall * workers):.1%}), peak worker RSS {rss:.0f} MiB", flush=True)
    shutil.rmtree(root, ignore_errors=True)


def epoch_cost(overrides: list[str], seeds: int = 32) -> tuple[float, float]:
    """(fixed seconds: build + first evaluation, seconds per epoch incl. its evaluation) of a paper-scale config
    trained as one ensemble of `seeds` seeds."""
    import torch

    from studentspec import load_config
    from studentspec import train

    torch.set_num_threads(1)
    cfg = load_config("configs/two_layer.yaml", [*overrides, "train.epochs=3", "train.threads=1", f"seeds={list(range(1, seeds + 1))}"])
    stamps: list[float] = []
    t0 = time.perf_counter()
    train(cfg, progress=False, on_eval=lambda _: stamps.append(time.perf_counter()))
    return stamps[0] - t0, (stamps[3] - stamps[1]) / 2


def jobs_per_task(m: int, multi: int, pack: int | None) -> int:
    """How many of a point's six 32-seed decay jobs the packing rule (sweep.grid.pack_jobs) puts in one task."""
    from studentspec import load_config
    from studentspec.sweep.grid import expand, pack_jobs

    jobs = expand("configs/two_layer.yaml", {"teacher.widths": [f"[{m}]"], "student.multi": [str(multi)],
                                              "teacher.decay": ["0", "0.5", "1", "1.5", "2", "2.5"]}, None)
    assert load_config("configs/two_layer.yaml").seeds == list(range(1, 33))
    return max(len(g) for g in pack_jobs("configs/two_layer.yaml", jobs, pack))


def project(workers: int, pack: int | None = None) -> None:
    """Project the full paper grid from the 12 (m, multi) points timed for 3 epochs each (packed: at S = 32 k)."""
    import concurrent.futures as cf
    import multiprocessing

    keys = [(m, multi) for m in (5, 10, 20) for multi in (1, 2, 5, 10)]
    ks = [jobs_per_task(m, multi, pack) for m, multi in keys]
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        costs = list(pool.map(epoch_cost, [[f"teacher.widths=[{m}]", f"student.multi={multi}", "teacher.decay=1"] for m, multi in keys],
                              [32 * k for k in ks]))
    rows, jobs = [], []
    for (m, multi), k, (fixed, epoch) in zip(keys, ks, costs):
        full = k * fixed + 100 * epoch  # a task: k builds (one per member) + 100 epochs of the packed ensemble
        # 6 = k q + r: q full tasks, and a last one of r members costed in proportion
        jobs += [full] * (6 // k) + ([fixed * (6 % k) / k + 100 * epoch * (6 % k) / k] if 6 % k else [])
        rows.append(f"| {m} | {multi} | {m * multi} | {32 * k} | {epoch:.2f} | {fixed:.1f} | {full / 60:.1f} | {32 * k * 1000 / epoch:.0f} |")
    loads = [0.0] * workers
    for job in sorted(jobs, reverse=True):  # longest first onto the least loaded worker
        loads[loads.index(min(loads))] += job
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("| m | multi | n | seeds per task | one epoch incl. evaluation (s) | fixed (s) | full task (min) | seed-steps/s incl. evaluation |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"measured in {time.perf_counter() - t0:.0f} s; projected full grid (72 configs x 32 seeds x 1e5 steps) on {workers} workers: "
          f"{max(loads) / 3600:.2f} h (sum of job times {sum(jobs) / 3600:.2f} h); peak worker RSS {rss:.0f} MiB", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["overhead", "grid", "project"])
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--executors", default="local,ray,slurm")
    ap.add_argument("--pack", default="auto", help="grid/project: as `sweep --pack` (auto, or at most N seeds per task; 0 = off)")
    a = ap.parse_args()
    pack = None if a.pack == "auto" else int(a.pack)
    if a.mode == "overhead":
        overhead(a.jobs, a.workers, a.executors.split(","))
    elif a.mode == "grid":
        grid(a.workers, pack)
    else:
        project(a.workers, pack)
