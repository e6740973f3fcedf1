"""`studentspec reproduce NAME --scale tiny|quick|paper`: run
one registered experiment of the paper (paper/experiments/).

A sweep experiment is a few sweep parts (a config + a grid). `reproduce` writes each part's config,
grid included, to OUT/configs/<part>.yaml, runs it with `sweep.run_sweep` into OUT/sweep/<part>
(so re-running the command resumes: finished jobs are skipped), then `analysis.analyze` reads the
stored run dirs back and writes OUT/figures/*.png|pdf and OUT/claims.json, and `report.write_report`
OUT/report.html. An experiment with its own pipeline (cifar10) runs it instead.

Scales: `paper` = docs/model.md section 4 exactly; `quick` = the same shape with fewer seeds,
steps and sizes (minutes on 2 cores, every qualitative effect still visible); `tiny` = seconds,
a smoke test whose claims are not expected to pass.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..config import ConfigError, build_config, clip
from ..ensemble.atomic import atomic_write
from ..store import StoreError, check_resumable, claim_files, claim_resumable, read_json, write_json
from ..sweep import grid as sweeps  # called through the module: tests replace sweeps.run_sweep
from .analysis import analyze
from .experiments import EXPERIMENTS, SCALES, Experiment, Part, get
from .report import write_report


def parts(experiment: str, scale: str) -> list[Part]:
    """The sweep parts of one registered experiment at one scale."""
    if scale not in SCALES:
        raise ConfigError(f"--scale: must be one of {SCALES}, got {scale!r}")
    found = get(experiment)
    if found.parts is None:
        raise ConfigError(f"reproduce {experiment}: runs its own pipeline, it has no sweep parts")
    return found.parts(scale)


def check_dataset(found: Experiment, dataset: str | None) -> str | None:
    """The data set an experiment runs on: `dataset`, or its default; ConfigError when it takes none or not this."""
    if dataset is None:
        return found.datasets[0] if found.datasets else None
    if not found.datasets:
        takers = ", ".join(e.name for e in EXPERIMENTS.values() if e.datasets)
        raise ConfigError(f"--dataset: reproduce {found.name} takes none (only {takers}), got {dataset!r}")
    if dataset not in found.datasets:
        raise ConfigError(
            f"--dataset: reproduce {found.name} takes one of {', '.join(found.datasets)}, got {dataset!r}"
        )
    return dataset


def _part_file(out: Path, part: Part) -> Path:
    """Write (or keep) OUT/configs/<part>.yaml: the part's explicit config tree plus its sweep section."""
    build_config(part.config)  # validates now, before anything runs
    sweep = {k: v for k, v in (("grid", part.grid), ("zip", part.zip)) if v}
    # the explicit tree, not every resolved default: a changed default elsewhere must not make a finished sweep
    # unresumable (each job's run dir still records its fully resolved config)
    text = yaml.safe_dump(part.config | ({"sweep": sweep} if sweep else {}), sort_keys=False)
    path = out / "configs" / f"{part.name}.yaml"
    if not path.parent.is_dir():
        claim_resumable(path.parent, "reproduce")  # a marked folder of the configs studentspec writes
    if not path.is_file() or path.read_text() != text:  # unchanged text keeps the sweep manifest valid on resume
        claim_files(path.parent, [path.name])
        atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def _claim_scale(out: Path, experiment: str, scale: str) -> dict[str, Any]:
    """Create OUT/reproduce.json, or check that OUT holds the same experiment and scale."""
    path = out / "reproduce.json"
    if path.is_file():
        info = read_json(path)
        if (info.get("experiment"), info.get("scale")) != (experiment, scale):
            raise StoreError(
                f"{out}: holds {info.get('experiment')} at scale {info.get('scale')}; choose another --out"
            )
        return info
    claim_resumable(out, "reproduce")
    info = {"experiment": experiment, "scale": scale, "invocations": []}
    write_json(path, info)
    return info


def versions() -> dict[str, str]:
    """Versions of the software that produced a result."""
    from .. import __version__

    return {
        "studentspec": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def reproduce(
    experiment: str,
    scale: str,
    out: str | Path,
    *,
    workers: int | None = None,
    progress: bool = True,
    overrides: list[str] | None = None,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
    dataset: str | None = None,
) -> int:
    """Run (or resume) a registered experiment, then analyze and report it; returns an exit code (1 if a job failed).

    `executor` and `executor_options` (address, gpus_per_job,
    slurm) go to `sweep.run_sweep`: paper scale on Ray or SLURM. `dataset` (--dataset) only for an
    experiment that lists datasets (images); None = its default.
    """
    found = get(experiment)
    dataset = check_dataset(found, dataset)
    check_resumable(out, "reproduce.json", "reproduce")
    if found.run is not None:
        # its own pipeline (cifar10, images: docs/model.md 4.4's teacher, pruned teacher, a student per multi,
        # figures); bad input (no data at data.root, another scale in OUT) raises ConfigError / StoreError, exit 2
        found.run(Path(out), scale, overrides or [], progress=progress, dataset=dataset)
        return 0
    if overrides:
        raise ConfigError(
            f"reproduce {experiment}: takes no key=value overrides (its "
            f"settings are the paper's; got {clip(' '.join(overrides))})"
        )
    out = Path(
        out
    ).resolve()  # the sweep manifests record config paths: absolute ones resume from any working directory
    plan = parts(experiment, scale)
    for part in plan:
        build_config(part.config)  # every part validated before OUT is touched
    _claim_scale(out, experiment, scale)
    files = {part.name: _part_file(out, part) for part in plan}
    start = time.perf_counter()
    record: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "parts": {}}
    failed = 0
    for part in plan:
        if progress:
            print(f"[{experiment} / {part.name}] sweep into {out / 'sweep' / part.name}", flush=True)
        options = sweeps.SweepOptions(
            ensemble_size=part.ensemble_size,
            workers=workers,
            threads=1,
            progress=progress,
            executor=executor,
            **(executor_options or {}),
        )
        result = sweeps.run_sweep(str(files[part.name]), [], out / "sweep" / part.name, options)
        record["parts"][part.name] = {
            "jobs": len(result["jobs"]),
            "run": len(result["done"]),
            "skipped": len(result["skipped"]),
            "failed": result["failed"],
        }
        failed += len(result["failed"])
    record["train_wall_time_s"] = round(time.perf_counter() - start, 1)
    _finish(found, scale, out, record, start=start, progress=progress)
    return 1 if failed else 0


def _finish(
    experiment: Experiment, scale: str, out: Path, record: dict[str, Any], *, start: float, progress: bool
) -> None:
    """Analyze the stored sweeps, record this invocation in reproduce.json, write report.html."""
    analyzed = analyze(out, progress)
    record["analyze_wall_time_s"] = analyzed["wall_time_s"]
    record["wall_time_s"] = round(time.perf_counter() - start, 1)
    info = read_json(out / "reproduce.json")
    info["invocations"] = [*info.get("invocations", []), record]
    info["versions"] = versions()
    write_json(out / "reproduce.json", info)
    path = write_report(out)
    if progress:
        print(
            f"{experiment.name} ({scale}): {analyzed['summary']['passed']}/{analyzed['summary']['total']} claims pass; "
            f"wall time {record['wall_time_s']:.0f} s; wrote {path}"
        )


def dry_run(
    experiment: str, scale: str, *, workers: int | None = None, executor: str = "local", dataset: str | None = None
) -> str:
    """What `reproduce` would run and cost, part by part, without writing anything: jobs, seeds, seed-steps, GFLOP,
    and the wall time projected by the cost model (sweep/cost.py: this machine's rates, measured on each part's
    smallest and largest job); parts run one after another, so their times add up."""
    import tempfile

    from ..sweep.cost import duration, estimate
    from ..sweep.executors import machine_workers

    found = get(experiment)
    if found.run is not None:
        if found.dry_run is not None:
            return found.dry_run(scale, check_dataset(found, dataset))
        raise ConfigError(
            f"reproduce {experiment} --dry-run: an experiment with its own pipeline (conv nets) has no cost model yet"
        )
    slots = workers or machine_workers(1)
    where = f"{slots} {executor} worker(s) x 1 thread" + (
        "" if executor == "local" else " (compute at this machine's rates; queueing and start-up not modelled)"
    )
    lines, total = [f"reproduce {experiment} --scale {scale}: projected on {where}"], [0.0, 0.0, 0.0]
    for part in parts(experiment, scale):
        build_config(part.config)
        sweep = {k: v for k, v in (("grid", part.grid), ("zip", part.zip)) if v}
        with tempfile.TemporaryDirectory(prefix="studentspec-dry-") as tmp:
            path = Path(tmp) / f"{part.name}.yaml"
            path.write_text(yaml.safe_dump(part.config | ({"sweep": sweep} if sweep else {}), sort_keys=False))
            options = sweeps.SweepOptions(ensemble_size=part.ensemble_size, dry_run=True, progress=False)
            planned = sweeps.run_sweep(str(path), [], Path(tmp) / "sweep", options)
            jobs = planned["jobs"]
            cost = estimate(
                str(path),
                [j.overrides for j in jobs],
                [j.seeds for j in jobs],
                workers=slots,
                threads=1,
                tasks=len(planned["packs"]),
                configs=planned["configs"],
            )
        seeds = sum(len(j.seeds) for j in jobs)
        lines.append(
            f"  part {part.name}: {cost.jobs} jobs ({len(planned['packs'])} tasks, {seeds} seeds), "
            f"{cost.seed_steps:.3g} seed-steps, {cost.gflop:.3g} GFLOP; {cost.describe()}"
        )
        lines.append(cost.calibration([j.id for j in jobs]))
        for i, value in enumerate((cost.low, cost.seconds, cost.high)):
            total[i] += value
    span = f" (range {duration(total[0])} - {duration(total[2])})" if total[2] > total[0] * 1.02 else ""
    lines.append(f"  total of the sweeps: {duration(total[1])}{span}")
    if found.unmodelled:
        lines.append(f"  not projected: {found.unmodelled}")
    return "\n".join(lines)
