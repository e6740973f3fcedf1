"""What the experiments' analyses read from a reproduce dir:
part configs, finished jobs, Lemma errors of stored weights.

Stored files only: nothing here trains. Imported by the analyses when they run (it loads torch).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...config import Config, load_config
from ...config import steps_per_epoch as config_steps_per_epoch
from ...mlp.data import train_size
from ...store import StoreError, load_run, read_json
from .. import claims as C


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


def first_job(sweep_dir: Path) -> Path:
    """The first finished job dir of a stored sweep; StoreError when none finished."""
    for job in read_json(sweep_dir / "sweep.json")["jobs"]:
        if (sweep_dir / "jobs" / job["id"] / "summary.json").is_file():
            return sweep_dir / "jobs" / job["id"]
    raise StoreError(
        f"{sweep_dir}: no finished job to analyze (see the failures reported by the sweep; re-run to retry them)"
    )


def job_config(run_dir: Path) -> Config:
    """The config a stored job ran with."""
    return load_run(run_dir).config


def theory_job(sweep_dir: Path) -> Path:
    """The finished job of a stored sweep that computed the theory diagnostics; StoreError when none did."""
    for job in read_json(sweep_dir / "sweep.json")["jobs"]:
        run_dir = sweep_dir / "jobs" / job["id"]
        if (run_dir / "summary.json").is_file() and job_config(run_dir).theory.enabled:
            return run_dir
    raise StoreError(f"{sweep_dir}: no finished job with theory diagnostics (re-run to finish it)")


def title(cfg: Config, scale: str, what: str) -> str:
    """A figure title: what it shows, the part's d, C and seeds, and the scale."""
    return f"{what} — d={cfg.input_dim}, C={cfg.output_dim}, {len(cfg.seeds)} seeds ({scale} scale)"
