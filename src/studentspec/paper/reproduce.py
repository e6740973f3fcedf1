"""`studentspec reproduce NAME --scale tiny|quick|paper`: one command per experiment of the paper.

An experiment is a few sweep parts (a config + a grid). `reproduce` writes each part's config,
grid included, to OUT/configs/<part>.yaml, runs it with `sweep.run_sweep` into OUT/sweep/<part>
(so re-running the command resumes: finished jobs are skipped), then `analyze` reads the stored
run dirs back and writes OUT/figures/*.png|pdf, OUT/claims.json and OUT/report.html. `analyze`
never trains, so figures, claims and report can be recomputed from old results.

Scales: `paper` = docs/model.md section 4 exactly; `quick` = the same shape with fewer seeds,
steps and sizes (minutes on 2 cores, every qualitative effect still visible); `tiny` = seconds,
a smoke test whose claims are not expected to pass.
"""

from __future__ import annotations

import copy
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from . import claims as C
from . import grid_figures as F
from .cifar import reproduce as reproduce_cifar
from ..config import Config, ConfigError, build_config, load_config
from ..ensemble.atomic import atomic_write
from ..config import steps_per_epoch as config_steps_per_epoch
from ..mlp.data import train_size
from ..store import StoreError, check_resumable, claim_files, claim_resumable, load_run, read_json, write_json

EXPERIMENTS = ("two-layer", "sample-complexity", "deep", "cifar10")
SCALES = ("tiny", "quick", "paper")


@dataclass(frozen=True)
class Part:
    """One sweep of an experiment: a full config tree, a product grid and lists zipped in step."""

    name: str
    config: dict[str, Any]
    grid: dict[str, list[Any]]
    zip: dict[str, list[Any]] = field(default_factory=dict)
    ensemble_size: int | None = None  # seeds per job; None = all seeds of a grid point in one batched job


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update (a new dict; dict-valued lr schedules are replaced, not merged)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "lr":
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---------------------------------------------------------------- experiment definitions (docs/model.md 4.x)

TWO_LAYER = {  # 4.1
    "seeds": list(range(1, 33)), "input_dim": 100, "output_dim": 50,
    "teacher": {"widths": [10], "activation": "relu", "recipe": "two_layer", "decay": 1.0, "bias": -0.1},
    "student": {"multi": 5.0, "init_std": 0.005},
    "data": {"kind": "gaussian", "std": 1.5, "n_train": 10000, "n_eval": 10000},
    "train": {"optimizer": "sgd", "lr": 0.01, "batch_size": 16, "sampling": "replacement", "steps_per_epoch": 1000, "epochs": 100,
              "loss": "half_sse", "dtype": "float64", "threads": 1},
    "eval": {"every": 1, "threshold": 0.95, "grad_norm": False},  # gradient norms are not used by any figure or claim
}
MULTIS = [1.0, 2.0, 5.0, 10.0]
DECAYS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]

SAMPLE = _merge(TWO_LAYER, {  # 4.2
    "teacher": {"widths": [5], "decay": 1.0}, "train": {"steps_per_epoch": 5000, "epochs": 20}})
SAMPLE_NS = [*range(30, 196, 15), 210, 270, 330, 390, 510, 630, 810, 1110]

DEEP = {  # 4.3
    "seeds": list(range(11, 21)), "input_dim": 20, "output_dim": 100,
    "teacher": {"widths": [50, 75, 100, 125], "activation": "relu", "recipe": "deep", "decay": 0.0, "tune": True},
    "student": {"multi": 2.0, "init_std": None, "init_scale": 1.0},
    "data": {"kind": "gaussian", "std": 10.0, "n_train": 200000, "n_eval": 10240},
    "train": {"optimizer": "sgd", "lr": {0: 0.2, 20: 0.1}, "batch_size": 64, "sampling": "shuffle", "steps_per_epoch": None,
              "epochs": 100, "loss": "mse", "dtype": "float32", "threads": 1},
    "eval": {"every": 5, "threshold": 0.95, "grad_norm": False},
}


def parts(experiment: str, scale: str) -> list[Part]:
    """The sweep parts of one experiment at one scale."""
    if scale not in SCALES:
        raise ConfigError(f"--scale: must be one of {SCALES}, got {scale!r}")
    if experiment == "two-layer":
        lshape, success = {"teacher": {"widths": [10]}}, {"teacher": {"widths": [20]}}
        base, multis, lshape_decays, decays = TWO_LAYER, MULTIS, [0.0, 1.0, 2.0], DECAYS
        if scale == "quick":  # the paper's d, C, m and grids; 8 seeds, 2e4 steps, eval set 2000 (docs/reproducing.md)
            base = _merge(TWO_LAYER, {"seeds": list(range(1, 9)), "data": {"n_eval": 2000}, "train": {"epochs": 20}})
            lshape = {"teacher": {"widths": [10]}, "eval": {"every": 5}}
        elif scale == "tiny":
            base = _merge(TWO_LAYER, {"seeds": [1, 2], "input_dim": 8, "output_dim": 4, "data": {"n_train": 300, "n_eval": 200},
                                      "train": {"epochs": 6, "steps_per_epoch": 100}})
            lshape, success = {"teacher": {"widths": [3]}}, {"teacher": {"widths": [4]}}
            multis, lshape_decays, decays = [1.0, 2.0], [0.0, 1.0], [0.0, 1.0, 2.0]
        return [Part("lshape", _merge(base, lshape), {"teacher.decay": lshape_decays, "student.multi": multis}),
                Part("success", _merge(base, success), {"teacher.decay": decays, "student.multi": multis})]
    if experiment == "sample-complexity":
        base, multis, ns = SAMPLE, MULTIS, SAMPLE_NS
        if scale == "quick":  # paper d, m, C and multis; 4 seeds, 2e4 steps, 9 sizes
            base = _merge(SAMPLE, {"seeds": [1, 2, 3, 4], "data": {"n_eval": 2000}, "train": {"steps_per_epoch": 2000, "epochs": 10},
                                   "eval": {"every": 5}})
            multis, ns = MULTIS, [30, 60, 90, 120, 180, 270, 390, 630, 1110]  # 9 of the paper's 19 sizes
        elif scale == "tiny":
            base = _merge(SAMPLE, {"seeds": [1, 2], "input_dim": 8, "output_dim": 4, "teacher": {"widths": [2]}, "data": {"n_eval": 200},
                                   "train": {"steps_per_epoch": 100, "epochs": 2}})
            multis, ns = [2.0], [12, 48]
        return [Part("sample", base, {"data.kind": ["teacher_aware", "gaussian"], "data.n_train": ns, "student.multi": multis})]
    if experiment == "deep":
        lshape = _merge(DEEP, {"seeds": [11, 12], "theory": {"enabled": True}})
        sample = _merge(DEEP, {"train": {"epochs": 200}, "eval": {"every": 20}})
        grid: dict[str, list[Any]] = {"student.multi": [2.0, 5.0], "train.loss": ["mse", "ce"]}
        zipped: dict[str, list[Any]] = {"data.n_train": [5000, 10000, 20000, 50000, 100000, 200000, 500000]}
        if scale == "quick":  # a [10,10,10,10] teacher; a fixed budget of 6e5 back-propagated samples per run
            small = {"output_dim": 20, "teacher": {"widths": [10, 10, 10, 10]}, "data": {"n_eval": 4096}}
            lshape = _merge(DEEP, small | {"seeds": [11, 12], "student": {"multi": 5.0}, "data": {"n_train": 20000, "n_eval": 4096},
                                           "train": {"epochs": 60}, "theory": {"enabled": True}})
            sample = _merge(DEEP, small | {"seeds": [11, 12]})
            zipped = {"data.n_train": [1000, 3000, 10000, 30000], "train.epochs": [600, 200, 60, 20], "eval.every": [150, 50, 15, 5]}
        elif scale == "tiny":
            small = {"input_dim": 6, "output_dim": 5, "teacher": {"widths": [4, 4]}, "data": {"n_eval": 300}}
            lshape = _merge(DEEP, small | {"seeds": [11, 12], "data": {"n_train": 500, "n_eval": 300}, "train": {"epochs": 4},
                                           "eval": {"every": 1}, "theory": {"enabled": True, "samples": 200}})
            sample = _merge(DEEP, small | {"seeds": [11]})
            grid = {"student.multi": [2.0], "train.loss": ["mse", "ce"]}
            zipped = {"data.n_train": [300, 600], "train.epochs": [4, 2], "eval.every": [2, 1]}
        # one seed per job: the single L-shape point would otherwise keep all but one worker idle
        return [Part("lshape", lshape, {}, ensemble_size=1), Part("sample", sample, grid, zipped)]
    raise ConfigError(f"reproduce: unknown experiment {experiment!r} (one of {', '.join(EXPERIMENTS)})")


# ---------------------------------------------------------------- running

def _part_file(out: Path, part: Part) -> Path:
    """Write (or keep) OUT/configs/<part>.yaml: the part's explicit config tree plus its sweep section."""
    build_config(part.config)  # validates now, before anything runs
    sweep = {k: v for k, v in (("grid", part.grid), ("zip", part.zip)) if v}
    # the explicit tree, not every resolved default: a changed default elsewhere must not make a finished sweep unresumable
    # (each job's run dir still records its fully resolved config)
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
            raise StoreError(f"{out}: holds {info.get('experiment')} at scale {info.get('scale')}; choose another --out")
        return info
    claim_resumable(out, "reproduce")
    info = {"experiment": experiment, "scale": scale, "invocations": []}
    write_json(path, info)
    return info


def versions() -> dict[str, str]:
    """Versions of the software that produced a result."""
    from .. import __version__

    return {"studentspec": __version__, "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform()}


def reproduce(experiment: str, scale: str, out: str | Path, workers: int | None = None, progress: bool = True,
              overrides: list[str] | None = None, executor: str = "local", executor_options: dict[str, Any] | None = None) -> int:
    """Run (or resume) every sweep part of an experiment, then analyze it; returns an exit code (1 if a job failed).

    `executor` and `executor_options` (address, gpus_per_job, slurm) go to `sweep.run_sweep`: paper scale on Ray or SLURM.
    """
    check_resumable(out, "reproduce.json", "reproduce")
    if experiment == "cifar10":
        # docs/model.md 4.4: teacher, pruned teacher, a student per multi, figures; bad input (no data at data.root, another
        # scale in OUT) raises ConfigError / StoreError, the CLI's exit 2
        reproduce_cifar(Path(out), scale, overrides or [], progress=progress)
        return 0
    if overrides:
        raise ConfigError(f"reproduce {experiment}: takes no key=value overrides (its settings are the paper's; got {' '.join(overrides)})")
    out = Path(out).resolve()  # the sweep manifests record config paths: absolute ones resume from any working directory
    plan = parts(experiment, scale)
    files = {}
    for part in plan:
        build_config(part.config)  # every part validated before OUT is touched
    _claim_scale(out, experiment, scale)
    for part in plan:
        files[part.name] = _part_file(out, part)
    start = time.perf_counter()
    from ..sweep.grid import run_sweep

    record: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "parts": {}}
    failed = 0
    for part in plan:
        if progress:
            print(f"[{experiment} / {part.name}] sweep into {out / 'sweep' / part.name}", flush=True)
        result = run_sweep(str(files[part.name]), [], out / "sweep" / part.name, part.ensemble_size, workers=workers, threads=1,
                           progress=progress, executor=executor, **(executor_options or {}))
        record["parts"][part.name] = {"jobs": len(result["jobs"]), "run": len(result["done"]), "skipped": len(result["skipped"]),
                                      "failed": result["failed"]}
        failed += len(result["failed"])
    record["train_wall_time_s"] = round(time.perf_counter() - start, 1)
    analyzed = analyze(out, progress)
    record["analyze_wall_time_s"] = analyzed["wall_time_s"]
    record["wall_time_s"] = round(time.perf_counter() - start, 1)
    info = read_json(out / "reproduce.json")
    info["invocations"] = [*info.get("invocations", []), record]
    info["versions"] = versions()
    write_json(out / "reproduce.json", info)
    from .report import write_report

    path = write_report(out)
    if progress:
        print(f"{experiment} ({scale}): {analyzed['summary']['passed']}/{analyzed['summary']['total']} claims pass; "
              f"wall time {record['wall_time_s']:.0f} s; wrote {path}")
    return 1 if failed else 0


# ---------------------------------------------------------------- analysis (stored dirs only)

def part_config(out: Path, name: str) -> Config:
    """The base config of a stored part (its sweep section ignored)."""
    return load_config(out / "configs" / f"{name}.yaml")


def steps_per_epoch(cfg: Config) -> int:
    """Steps of one epoch: configured, or one pass over the training set."""
    return config_steps_per_epoch(cfg.train, train_size(cfg))


def lemma_from_run(run_dir: Path, samples: int = 256) -> list[float]:
    """Lemma errors per layer on a stored run's final weights, at fresh inputs drawn like its data (float64)."""
    run = load_run(run_dir)
    cfg, weights = run.config, run.weights()
    teacher = C.net_from_weights(weights, "teacher", cfg.teacher.activation, cfg.teacher.leaky_slope)
    student = C.net_from_weights(weights, "student", cfg.teacher.activation, cfg.teacher.leaky_slope)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(teacher.n_seeds, samples, cfg.input_dim, generator=g, dtype=torch.float64) * cfg.data.std
    return C.lemma_errors(teacher, student, x)


def _first_job(sweep_dir: Path) -> Path:
    for job in read_json(sweep_dir / "sweep.json")["jobs"]:
        if (sweep_dir / "jobs" / job["id"] / "summary.json").is_file():
            return sweep_dir / "jobs" / job["id"]
    raise StoreError(f"{sweep_dir}: no finished job to analyze (see the failures reported by the sweep; re-run to retry them)")


def _title(cfg: Config, scale: str, what: str) -> str:
    return f"{what} — d={cfg.input_dim}, C={cfg.output_dim}, {len(cfg.seeds)} seeds ({scale} scale)"


def _two_layer(out: Path, scale: str, figs: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    from ..sweep.grid import load_sweep

    lcfg, scfg = part_config(out, "lshape"), part_config(out, "success")
    lsh, suc = load_sweep(out / "sweep" / "lshape"), load_sweep(out / "sweep" / "success")
    spe = steps_per_epoch(scfg)
    evaluated = sorted(suc["teachers"]["step"].unique())
    early = int(min((s for s in evaluated if s >= 5 * spe), default=evaluated[-1]))  # "after 5 epochs": the first evaluation from epoch 5 on
    multi = 5.0 if 5.0 in set(suc["teachers"][F.MULTI]) else float(suc["teachers"][F.MULTI].max())
    paths = F.save(F.lshape(lsh["students"], _title(lcfg, scale, f"L-shape, m={lcfg.teacher.widths[0]}")), figs, "lshape")
    paths += F.save(F.success_rate(suc["teachers"], early, spe, _title(scfg, scale, f"success rate, m={scfg.teacher.widths[0]}")), figs, "success_rate")
    paths += F.save(F.convergence(suc["scalars"], spe, _title(scfg, scale, f"convergence, m={scfg.teacher.widths[0]}")), figs, "convergence")
    paths += F.save(F.teacher_curves(suc["teachers"], multi, spe, _title(scfg, scale, "per-teacher best correlation"), threshold=scfg.eval.threshold),
                    figs, "teacher_curves")
    found = [
        C.lshape(lsh["students"], corr_threshold=lcfg.eval.threshold),
        C.success_falls_with_index(suc["teachers"]),
        C.success_rises_with_multi(suc["teachers"]),
        C.success_falls_with_decay(suc["teachers"]),
        C.success_lower_early(suc["teachers"], early),
        C.strong_first(suc["teachers"]),
        C.converges_faster_with_multi(suc["scalars"], early),
        C.converges_lower_with_multi(suc["scalars"]),
        C.lemma_identity(lemma_from_run(_first_job(out / "sweep" / "lshape"))),
    ]
    return paths, found


def _sample(out: Path, scale: str, figs: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    from ..sweep.grid import load_sweep

    cfg = part_config(out, "sample")
    t = load_sweep(out / "sweep" / "sample")
    paths = F.save(F.sample_complexity(t["scalars"], t["teachers"], _title(cfg, scale, f"teacher-aware vs Gaussian data, m={cfg.teacher.widths[0]}")),
                   figs, "sample_complexity")
    return paths, [C.teacher_aware_fewer_samples(t["teachers"])]


def _deep(out: Path, scale: str, figs: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    from ..sweep.grid import load_sweep

    lcfg, scfg = part_config(out, "lshape"), part_config(out, "sample")
    lsh, smp = load_sweep(out / "sweep" / "lshape"), load_sweep(out / "sweep" / "sample")
    students = lsh["students"].assign(**{F.MULTI: lcfg.student.multi})
    paths = F.save(F.deep_lshape(students, steps_per_epoch(lcfg), _title(lcfg, scale, f"deep L-shape, teacher {lcfg.teacher.widths}, multi {lcfg.student.multi:g}")),
                   figs, "deep_lshape")
    paths += F.save(F.deep_rho_vs_n(smp["scalars"], _title(scfg, scale, f"deep: rho_mean vs N, teacher {scfg.teacher.widths}")), figs, "deep_rho_vs_n")
    found = [C.deep_lowest_highest(smp["scalars"]), C.deep_lowest_to_one(smp["scalars"]),
             C.lemma_identity(lemma_from_run(_first_job(out / "sweep" / "lshape")))]
    return paths, found


ANALYSES: dict[str, Callable[[Path, str, Path], tuple[list[Path], list[dict[str, Any]]]]] = {
    "two-layer": _two_layer, "sample-complexity": _sample, "deep": _deep}


def analyze(out: str | Path, progress: bool = False) -> dict[str, Any]:
    """Figures and claims.json of a reproduce dir, from its stored run dirs only; returns the claims document."""
    out = Path(out)
    info = read_json(out / "reproduce.json")
    for sweep_dir in sorted((out / "sweep").glob("*/")):
        _first_job(sweep_dir)  # a part whose every job failed has nothing to analyze: say which
    start = time.perf_counter()
    with F.paper_style():
        paths, found = ANALYSES[info["experiment"]](out, info["scale"], out / "figures")
    doc = {"experiment": info["experiment"], "scale": info["scale"], "claims": found, "summary": C.summarize(found),
           "figures": list(dict.fromkeys(p.stem for p in paths)), "wall_time_s": round(time.perf_counter() - start, 1)}  # figures in the paper's order
    write_json(out / "claims.json", doc)
    if progress:
        for c in found:
            value = "n/a" if c["value"] is None else f"{c['value']:.4g}"
            print(f"  {'PASS' if c['passed'] else 'FAIL'}  {c['name']}: {value} ({c['threshold']})")
    return doc
