"""The cost model against real jobs: `reproduce --dry-run`'s projection of single jobs vs their measured wall time.

For each part of an experiment at a scale, the part's jobs are planned and projected exactly as
`studentspec reproduce NAME --scale S --dry-run` does (calibrated on the part's smallest and largest job), then up to
three jobs (the smallest, the median and the largest projection under --max-seconds) run for real, each in a fresh
process as a sweep worker runs it (load the config, train, write the run dir) after a one-step warm-up of the same
config: the interpreter's start-up, imports and the compiled step's loading are left out, as a pool worker pays them
once, not per job. Prints projected, measured and their ratio per job, and the median
and worst |error|. Target: within 25 %.

    python benchmarks/bench_cost.py sample-complexity --scale paper --max-seconds 120
    python benchmarks/bench_cost.py two-layer --scale quick
    python benchmarks/bench_cost.py deep --scale quick
    python benchmarks/bench_cost.py deep-table --scale paper --stored runs/reproduce/deep-table-paper

--stored DIR compares every job of a finished `reproduce` dir instead (its summary.json wall_time_s, measured by the
sweep's worker: whatever else ran on the machine then is in it), running nothing but the calibration.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from studentspec.paper.reproduce import parts
from studentspec.sweep import grid as sweeps
from studentspec.sweep.cost import estimate

JOB = """
import json, sys, time
from studentspec import pipelines
from studentspec.config import build_config
import torch
torch.set_num_threads(1)
a = json.loads(sys.argv[1])
cfg = pipelines.load_config(a["config"], [*a["overrides"], f"seeds={a['seeds']}"])
tree = cfg.to_dict()
tree["train"] |= {"epochs": 1, "steps_per_epoch": 1}
warm = build_config(tree)  # a worker's first job loads the compiled step and the writer's libraries: once per worker
pipelines.write_run(pipelines.train(warm, progress=False), a["out"] + "-warm")
t0 = time.perf_counter()
cfg = pipelines.load_config(a["config"], [*a["overrides"], f"seeds={a['seeds']}"])
pipelines.write_run(pipelines.train(cfg, progress=False), a["out"])
print(json.dumps({"job": time.perf_counter() - t0}))
"""


def run_job(config: str, overrides: list[str], seeds: list[int], out: str) -> float:
    """Seconds one job takes in a fresh process after a warm-up job."""
    arg = json.dumps({"config": config, "overrides": overrides, "seeds": seeds, "out": out})
    done = subprocess.run([sys.executable, "-c", JOB, arg], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"job failed: {done.stderr.strip().splitlines()[-1:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["job"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment")
    ap.add_argument("--scale", default="quick")
    ap.add_argument("--max-seconds", type=float, default=180.0, help="skip jobs projected to take longer")
    ap.add_argument("--stored", default=None, help="a finished reproduce dir: compare with its jobs' wall times")
    args = ap.parse_args()
    errors = []
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        for part in parts(args.experiment, args.scale):
            sweep = {k: v for k, v in (("grid", part.grid), ("zip", part.zip)) if v}
            path = Path(tmp) / f"{part.name}.yaml"
            path.write_text(yaml.safe_dump(part.config | ({"sweep": sweep} if sweep else {}), sort_keys=False))
            options = sweeps.SweepOptions(ensemble_size=part.ensemble_size, dry_run=True, progress=False)
            jobs = sweeps.run_sweep(str(path), [], Path(tmp) / "plan", options)
            planned = jobs["configs"]
            jobs = jobs["jobs"]
            cost = estimate(
                str(path), [j.overrides for j in jobs], [j.seeds for j in jobs], workers=1, threads=1, configs=planned
            )
            print(f"part {part.name}: {len(jobs)} jobs")
            print(cost.calibration([j.id for j in jobs]))
            if args.stored:
                for i, job in enumerate(jobs):
                    summary = Path(args.stored) / "sweep" / part.name / "jobs" / job.id / "summary.json"
                    measured = float(json.loads(summary.read_text())["wall_time_s"])
                    ratio = cost.job_seconds[i] / measured
                    errors.append(abs(ratio - 1))
                    print(
                        f"  job {job.id} ({' '.join(job.overrides)}): projected {cost.job_seconds[i]:7.1f} s, "
                        f"stored {measured:7.1f} s, projected/measured {ratio:.2f}"
                    )
                continue
            order = sorted(range(len(jobs)), key=lambda i: cost.job_seconds[i])
            order = [i for i in order if cost.job_seconds[i] <= args.max_seconds]
            if not order:
                print(f"  every job is projected above --max-seconds {args.max_seconds:g}: none run")
                continue
            picks = sorted({order[0], order[len(order) // 2], order[-1]}, key=lambda i: cost.job_seconds[i])
            for i in picks:
                job = jobs[i]
                measured = run_job(str(path), job.overrides, job.seeds, str(Path(tmp) / "runs" / part.name / job.id))
                ratio = cost.job_seconds[i] / measured
                errors.append(abs(ratio - 1))
                print(
                    f"  job {job.id} ({' '.join(job.overrides)}): projected {cost.job_seconds[i]:7.1f} s, "
                    f"measured {measured:7.1f} s, projected/measured {ratio:.2f}"
                )
    if errors:
        print(
            f"{len(errors)} jobs: median |projected/measured - 1| = {statistics.median(errors):.1%}, "
            f"worst {max(errors):.1%}"
        )


if __name__ == "__main__":
    main()
