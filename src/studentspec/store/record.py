"""The run directory: config.yaml, scalars/teachers/students.parquet, summary.json, weights.npz (+ extra tables).

A pipeline turns its result into a RunRecord (mlp/record.py, conv/record.py); this module writes
and reads RunRecords and knows no pipeline. Every file is written to a temporary name and
renamed; the whole directory is staged beside its final path and swapped in last, so a run dir
either holds a complete run or does not exist. Besides the three tables every run has, a record may
hold any other table (a per-evaluation metric's own, e.g. order.parquet): the store takes every validly
named one, summary.json lists the run's tables ("tables"), and `Run.table` reads one lazily.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..config import Config, ConfigError, build_config, read_mapping
from ..ensemble.atomic import write_all
from .dirs import LEGACY_TABLES, RUN_ENTRIES, StoreError, write_dir
from .jsonfile import read_json, write_json
from .schemas import TABLE_PATTERN

TABLES = ("scalars", "teachers", "students")
FILES = ("config.yaml", *(f"{t}.parquet" for t in TABLES), "summary.json", "weights.npz")
# A table name: NAME.parquet in the run dir (schemas.TABLE_PATTERN). Names of other commands' files there are refused.
TABLE_NAME = re.compile(TABLE_PATTERN)
# What a stored table must hold to be read back (load_run, Run.table, a checkpoint's tables): the columns the readers
# use, each of its kind; every other column is the pipeline's or a metric's own and passes unchecked.
KEYS = {"seed": "integer", "step": "integer", "split": "text"}
COLUMNS = {
    "scalars": KEYS | {"mse": "number"},
    "teachers": KEYS
    | {
        "layer": "integer",
        "teacher": "integer",
        "best_corr": "number",
        "fanout_norm": "number",
        "specialized": "boolean",
    },
    "students": KEYS | {"layer": "integer", "student": "integer", "best_corr": "number", "fanout_norm": "number"},
}
EXTRA_COLUMNS = {"seed": "integer", "step": "integer"}  # any other table's (e.g. order.parquet)
SPLITS = frozenset({"train", "eval"})
_KIND = {
    "integer": pd.api.types.is_integer_dtype,
    "number": lambda s: pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s),
    "boolean": pd.api.types.is_bool_dtype,
    "text": pd.api.types.is_string_dtype,
}


@dataclass
class RunRecord:
    """Everything a finished run stores, whatever pipeline made it."""

    config: Config
    tables: dict[str, pd.DataFrame]  # scalars (per seed and evaluation), teachers and students (per node), metrics' own
    arrays: dict[str, np.ndarray]  # final weights, keys like 'teacher.W1', 'student.b2'
    summary: dict[str, Any]  # summary.json: per-seed final numbers, divergences, versions, wall time


def check_table_name(name: str) -> str:
    """`name` when a record may store a table under it (NAME.parquet); ValueError otherwise."""
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise ValueError(f"table name {str(name)[:60]!r}: lowercase letters, digits and _ (at most 64), a letter first")
    if name not in TABLES and f"{name}.parquet" in RUN_ENTRIES:
        raise ValueError(f"table name {name!r}: {name}.parquet is another command's file in a run dir")
    return name


def count_column(threshold: float) -> str:
    """Column name of the count of students above a threshold, e.g. n_above_0.95."""
    return f"n_above_{threshold:g}"


def time_to_specialize(teachers: pd.DataFrame, split: str = "eval") -> pd.DataFrame:
    """Per (seed, layer, teacher): first evaluated step at which it was specialized (NaN if never)."""
    df = teachers[teachers["split"] == split]
    first = df[df["specialized"]].groupby(["seed", "layer", "teacher"])["step"].min()
    keys = df[["seed", "layer", "teacher"]].drop_duplicates().set_index(["seed", "layer", "teacher"])
    return keys.join(first.rename("time_to_specialize")).reset_index()


def split_record(record: RunRecord, configs: list[Config], note: dict[str, Any] | None = None) -> list[RunRecord]:
    """The records of the members of a packed run (mlp/pack.py), one per config, in order.

    The packed record's seeds are the positions 0..N-1, member k holding the next len(configs[k].seeds) of them.
    Every table is filtered by its seed column and the positions mapped back to the member's seeds (row order
    kept), every array is sliced along its leading seed axis, and the summary's seeds, per_seed and diverged
    entries are the member's; what is not per seed (steps, wall time, versions, ...) is the pack's, plus `note`.
    """
    total = sum(len(c.seeds) for c in configs)
    if list(record.config.seeds) != list(range(total)):
        raise ValueError(f"split_record: the packed record's seeds must be 0..{total - 1}, got {record.config.seeds}")
    out, start = [], 0
    for cfg in configs:
        ids = range(start, start + len(cfg.seeds))
        real = dict(zip(ids, cfg.seeds))
        tables = {}
        for name, df in record.tables.items():
            part = df[df["seed"].isin(ids)].reset_index(drop=True)
            part["seed"] = part["seed"].map(real).astype(df["seed"].dtype)
            tables[name] = part
        arrays = {}
        for key, arr in record.arrays.items():
            if arr.shape[0] != total:
                raise ValueError(f"split_record: array {key!r} has no leading seed axis of {total}")
            arrays[key] = np.ascontiguousarray(arr[start : start + len(cfg.seeds)])
        summary = dict(record.summary)
        summary["seeds"] = list(cfg.seeds)
        if "per_seed" in summary:
            summary["per_seed"] = {str(real[i]): record.summary["per_seed"][str(i)] for i in ids}
        if "diverged" in summary:
            summary["diverged"] = {
                str(real[int(k)]): v for k, v in record.summary["diverged"].items() if int(k) in real
            }
        out.append(RunRecord(cfg, tables, arrays, summary | (note or {})))
        start += len(cfg.seeds)
    return out


def check_table(df: pd.DataFrame, file: Path, columns: dict[str, str], seeds: list[int]) -> pd.DataFrame:
    """`df` read from `file` when it holds `columns` (name -> kind), only the run's seeds, steps >= 0 and known splits;
    StoreError naming the file and the column otherwise."""
    for col, kind in columns.items():
        if col not in df.columns:
            raise StoreError(f"{file}: column {col!r} missing")
        if not _KIND[kind](df[col]):
            raise StoreError(f"{file}: column {col!r} holds {df[col].dtype} values, {kind} values expected")
    other = sorted(set(df["seed"].unique().tolist()) - set(seeds))
    if other:
        raise StoreError(f"{file}: column 'seed' holds {other[0]}, which is not one of config.yaml's seeds")
    if len(df) and int(df["step"].min()) < 0:
        raise StoreError(f"{file}: column 'step' holds a negative step")
    if "split" in columns and not set(df["split"].unique().tolist()) <= SPLITS:
        found = sorted(map(str, set(df["split"].unique().tolist()) - SPLITS))[0][:60]
        raise StoreError(f"{file}: column 'split' holds {found!r}, not one of {sorted(SPLITS)}")
    return df


_ARROW = {
    "integer": ("is_integer",),
    "number": ("is_integer", "is_floating", "is_decimal"),
    "boolean": ("is_boolean",),
    "text": ("is_string", "is_large_string"),
}


def check_columns(file: Path, columns: dict[str, str]) -> None:
    """StoreError naming `file` and the column unless its Parquet schema (read alone, no rows) holds `columns` (name ->
    kind): what a reader that does not load the rows (sweep.query's DuckDB) checks first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(file)
    except Exception as err:
        raise StoreError(f"{file}: corrupt or unreadable ({err.__class__.__name__})") from None
    for col, kind in columns.items():
        if col not in schema.names:
            raise StoreError(f"{file}: column {col!r} missing")
        kind_of = schema.field(col).type
        if not any(getattr(pa.types, test)(kind_of) for test in _ARROW[kind]):
            raise StoreError(f"{file}: column {col!r} holds {kind_of} values, {kind} values expected")


def read_table(file: Path, columns: dict[str, str], seeds: list[int]) -> pd.DataFrame:
    """A stored Parquet table, checked (check_table); StoreError naming the file when it is unreadable."""
    try:
        df = pd.read_parquet(file)
    except Exception as err:
        raise StoreError(f"{file}: corrupt or unreadable ({err.__class__.__name__})") from None
    return check_table(df, file, columns, seeds)


def check_weights(
    arrays: dict[str, np.ndarray], file: Path, n_seeds: int, shared_teacher: bool
) -> dict[str, np.ndarray]:
    """`arrays` read from weights.npz when every key is a teacher's or student's and every array has a leading seed axis
    of `n_seeds` (1 for a teacher all seeds share,
    `shared_teacher`: a conv run's); StoreError naming the array otherwise."""
    for prefix in ("teacher.", "student."):
        if not any(k.startswith(prefix) for k in arrays):
            raise StoreError(f"{file}: no {prefix[:-1]} arrays (keys like {prefix}W1 expected)")
    for key, arr in arrays.items():
        if not key.startswith(("teacher.", "student.")):
            raise StoreError(f"{file}: array {key[:60]!r} is neither a teacher's nor a student's")
        if arr.dtype.kind not in "biuf":
            raise StoreError(f"{file}: array {key!r} holds {arr.dtype} values, numbers expected")
        allowed = {n_seeds, 1} if shared_teacher and key.startswith("teacher.") else {n_seeds}
        if arr.ndim == 0 or arr.shape[0] not in allowed:
            raise StoreError(
                f"{file}: array {key!r} has shape {list(arr.shape)}, a leading axis of {n_seeds} seeds expected"
            )
    return arrays


def write_record(record: RunRecord, out: str | Path, overwrite: bool = False) -> Path:
    """Write a run dir atomically (see store.dirs.check_out for what --overwrite may replace); summary.json is
    written last, so a run dir with a summary is complete."""
    if not set(TABLES) <= set(record.tables):
        raise ValueError(f"a run record holds the tables {TABLES} (and any others), not {sorted(record.tables)}")
    for name in record.tables:
        check_table_name(name)
    names = [*TABLES, *(t for t in record.tables if t not in TABLES)]

    def fill(stage: Path) -> None:
        writers: dict[str, Callable[[Path], object]] = {
            "config.yaml": lambda p: p.write_text(yaml.safe_dump(record.config.to_dict(), sort_keys=False))
        }
        for name in names:
            writers[f"{name}.parquet"] = functools.partial(_parquet, record.tables[name])
        writers["weights.npz"] = lambda p: _savez(p, record.arrays)
        write_all(stage, writers)
        write_json(stage / "summary.json", {**record.summary, "tables": names})  # what load_run may read

    return write_dir(out, overwrite, fill)


def _parquet(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path, index=False)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a path
        np.savez(f, **arrays)  # type: ignore[arg-type]  # mypy matches **arrays against allow_pickle: bool too


@dataclass
class Run:
    """A stored run: its config, DataFrames, summary and a lazy view of the weights."""

    path: Path
    config: Config
    scalars: pd.DataFrame
    teachers: pd.DataFrame
    students: pd.DataFrame
    summary: dict[str, Any]
    _extra: dict[str, pd.DataFrame] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )  # extra tables read so far

    @property
    def table_names(self) -> list[str]:
        """The tables this run stored: summary.json's list (a run written before it listed them: the three, plus
        the one other table such runs could hold where its file is there)."""
        listed = self.summary.get("tables")
        if listed is not None:
            return list(listed)
        return [*TABLES, *(t for t in LEGACY_TABLES if (self.path / f"{t}.parquet").is_file())]

    def has_table(self, name: str) -> bool:
        """Whether the run stored table `name` (the three every run has, or one its summary.json lists)."""
        return name in self.table_names

    def table(self, name: str) -> pd.DataFrame:
        """A stored table by name: scalars/teachers/students, or another the run lists (e.g. 'order') read on first
        use; StoreError naming the file when it is missing, corrupt or lacks its seed/step columns."""
        if name in TABLES:
            return getattr(self, name)
        if name not in self._extra:
            file = self.path / f"{name}.parquet"
            if name not in self.table_names:
                why = (
                    "missing (this run did not store" if not file.is_file() else "not one of summary.json's tables (not"
                )
                raise StoreError(f"{file}: {why} the {name!r} table; its tables: {', '.join(self.table_names)})")
            self._extra[name] = read_table(file, EXTRA_COLUMNS, self.config.seeds)
        return self._extra[name]

    def weights(self) -> dict[str, np.ndarray]:
        """Final teacher and student weights, keys like 'teacher.W1', 'student.b2'; StoreError naming the file and the
        array when one is missing, not numeric, or lacks the leading seed axis."""
        file = self.path / "weights.npz"
        try:
            with np.load(file) as z:  # no pickled objects (allow_pickle is off)
                arrays = {k: z[k] for k in z.files}
        except Exception as err:
            raise StoreError(f"{file}: unreadable ({err.__class__.__name__})") from None
        return check_weights(arrays, file, len(self.config.seeds), self.summary.get("pipeline") == "conv")

    def time_to_specialize(self, split: str = "eval") -> pd.DataFrame:
        """First evaluated step at which each teacher node was specialized."""
        return time_to_specialize(self.teachers, split)


def load_run(path: str | Path) -> Run:
    """Read a run directory written by `studentspec run`, every file checked (config, summary schema, table columns and
    seeds) before it is returned; StoreError names the file and the field or column that is wrong."""
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
    info = read_json(path / "summary.json")  # checked against its schema (store/schemas.py)
    if info["seeds"] != list(cfg.seeds):
        raise StoreError(
            f"{path / 'summary.json'}: field seeds: {str(info['seeds'])[:100]} differs from config.yaml's seeds"
        )
    frames = {name: read_table(path / f"{name}.parquet", COLUMNS[name], cfg.seeds) for name in TABLES}
    return Run(path, cfg, frames["scalars"], frames["teachers"], frames["students"], info)
