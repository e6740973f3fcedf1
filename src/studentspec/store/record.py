"""The run directory: config.yaml, scalars/teachers/students.parquet, summary.json, weights.npz.

A pipeline turns its result into a RunRecord (mlp/record.py, conv/record.py); this module writes
and reads RunRecords and knows no pipeline. Every file is written to a temporary name and
renamed; the whole directory is staged beside its final path and swapped in last, so a run dir
either holds a complete run or does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..config import Config, ConfigError, build_config, read_mapping
from ..ensemble.atomic import write_all
from .dirs import StoreError, write_dir
from .jsonfile import read_json, write_json

TABLES = ("scalars", "teachers", "students")
FILES = ("config.yaml", *(f"{t}.parquet" for t in TABLES), "summary.json", "weights.npz")


@dataclass
class RunRecord:
    """Everything a finished run stores, whatever pipeline made it."""

    config: Config
    tables: dict[str, pd.DataFrame]  # scalars (per seed and evaluation), teachers and students (per node)
    arrays: dict[str, np.ndarray]  # final weights, keys like 'teacher.W1', 'student.b2'
    summary: dict[str, Any]  # summary.json: per-seed final numbers, divergences, versions, wall time


def count_column(threshold: float) -> str:
    """Column name of the count of students above a threshold, e.g. n_above_0.95."""
    return f"n_above_{threshold:g}"


def time_to_specialize(teachers: pd.DataFrame, split: str = "eval") -> pd.DataFrame:
    """Per (seed, layer, teacher): first evaluated step at which it was specialized (NaN if never)."""
    df = teachers[teachers["split"] == split]
    first = df[df["specialized"]].groupby(["seed", "layer", "teacher"])["step"].min()
    keys = df[["seed", "layer", "teacher"]].drop_duplicates().set_index(["seed", "layer", "teacher"])
    return keys.join(first.rename("time_to_specialize")).reset_index()


def write_record(record: RunRecord, out: str | Path, overwrite: bool = False) -> Path:
    """Write a run dir atomically (see store.dirs.check_out for what --overwrite may replace); summary.json is
    written last, so a run dir with a summary is complete."""
    if set(record.tables) != set(TABLES):
        raise ValueError(f"a run record holds the tables {TABLES}, not {sorted(record.tables)}")

    def fill(stage: Path) -> None:
        writers = {"config.yaml": lambda p: p.write_text(yaml.safe_dump(record.config.to_dict(), sort_keys=False))}
        for name in TABLES:
            writers[f"{name}.parquet"] = lambda p, df=record.tables[name]: df.to_parquet(p, index=False)
        writers["weights.npz"] = lambda p: _savez(p, record.arrays)
        write_all(stage, writers)
        write_json(stage / "summary.json", record.summary)

    return write_dir(out, overwrite, fill)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a path
        np.savez(f, **arrays)


@dataclass
class Run:
    """A stored run: its config, DataFrames, summary and a lazy view of the weights."""

    path: Path
    config: Config
    scalars: pd.DataFrame
    teachers: pd.DataFrame
    students: pd.DataFrame
    summary: dict[str, Any]

    def weights(self) -> dict[str, np.ndarray]:
        """Final teacher and student weights, keys like 'teacher.W1', 'student.b2'."""
        try:
            with np.load(self.path / "weights.npz") as z:
                return {k: z[k] for k in z.files}
        except Exception as err:
            raise StoreError(f"{self.path / 'weights.npz'}: unreadable ({err.__class__.__name__})") from None

    def time_to_specialize(self, split: str = "eval") -> pd.DataFrame:
        """First evaluated step at which each teacher node was specialized."""
        return time_to_specialize(self.teachers, split)


def load_run(path: str | Path) -> Run:
    """Read a run directory written by `studentspec run`; StoreError names what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise StoreError(f"{path}: run directory not found")
    for name in FILES:
        if not (path / name).is_file():
            raise StoreError(f"{path / name}: missing (incomplete run directory?)")
    try:
        tree = read_mapping(path / "config.yaml")
    except ConfigError as err:
        raise StoreError(f"corrupt run dir: {err}") from None
    try:
        cfg = build_config(tree)
    except ConfigError as err:
        raise StoreError(f"{path / 'config.yaml'}: invalid ({err})") from None
    frames = {}
    for name in ("scalars", "teachers", "students"):
        try:
            frames[name] = pd.read_parquet(path / f"{name}.parquet")
        except Exception as err:
            raise StoreError(f"{path / name}.parquet: corrupt or unreadable ({err.__class__.__name__})") from None
        for col in ("seed", "step", "split"):
            if col not in frames[name].columns:
                raise StoreError(f"{path / name}.parquet: column {col!r} missing")
    info = read_json(path / "summary.json")
    return Run(path, cfg, frames["scalars"], frames["teachers"], frames["students"], info)
