"""Checkpoints of one long run, written whole beside its run dir: the trainer's tensors and the evaluations so far.

A checkpoint is the dir `.NAME.checkpoint` next to the run dir NAME: `state.pt` (tensors, numbers and
lists only: read back with torch.load(weights_only=True), never unpickled code), one Parquet file per
table of the evaluations made so far, and `checkpoint.json` (format, epoch, the run's config) written
last. It is replaced by swapping (store.dirs.write_dir), so a complete checkpoint exists at every
instant once the first is written; the run dir's writer removes it when the run is complete.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
import yaml

from ..config import Config
from ..ensemble import loopstate
from . import schemas
from .dirs import StoreError, check_out, write_dir
from .jsonfile import read_json, write_json
from .record import COLUMNS, EXTRA_COLUMNS, TABLE_NAME, TABLES, read_table

FORMAT = "studentspec.checkpoint"
VERSION = 1
MARKER = "checkpoint.json"


def checkpoint_path(out: str | Path) -> Path:
    """Where the checkpoint of the run dir `out` lives: `.NAME.checkpoint` beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.checkpoint"


def write_checkpoint(
    out: str | Path, cfg: Config, *, epoch: int, state: dict[str, Any], tables: dict[str, pd.DataFrame]
) -> Path:
    """Write (or replace, by swapping) the checkpoint of run dir `out` after `epoch` epochs."""

    def fill(stage: Path) -> None:
        buf = (
            io.BytesIO()
        )  # serialized in memory first: torch reports a failed file write (a full disk) as a RuntimeError
        torch.save(state, buf)
        (stage / "state.pt").write_bytes(buf.getbuffer())
        for name, frame in tables.items():
            frame.to_parquet(stage / f"{name}.parquet", index=False)
        write_json(
            stage / MARKER,
            {"format": FORMAT, "version": VERSION, "epoch": epoch, "tables": sorted(tables), "config": cfg.to_dict()},
        )

    return write_dir(checkpoint_path(out), True, fill, kind="checkpoint")


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    """The dotted key where two config trees first differ ('' when they are equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found:
                return found
        return ""
    return prefix.rstrip(".") if a != b else ""


class Checkpoint(NamedTuple):
    """A checkpoint read back and checked: what a pipeline's restore(loop, epoch, state, tables, file=file) takes."""

    epoch: int
    state: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    file: Path  # its state.pt: named by the restore's errors


def read_checkpoint(out: str | Path, cfg: Config) -> Checkpoint | None:
    """(epoch, state, tables, state file) of run dir `out`'s checkpoint, None when there is none; StoreError (one line
    naming the file and the field) when it is incomplete, corrupt, was written for another config, or holds an epoch,
    a state or a table this run cannot continue from. The shapes of the tensors are checked by the restore, against
    the freshly built loop, before anything is put back."""
    path = checkpoint_path(out)
    if not path.exists():
        return None
    marker = path / MARKER
    meta = read_json(marker, check=False) if marker.is_file() else None
    if meta is None or meta.get("format") != FORMAT:
        raise StoreError(f"{path}: not a complete studentspec checkpoint (no {MARKER})")
    if meta.get("version") != VERSION:
        raise StoreError(
            f"{path}: checkpoint version {str(meta.get('version'))[:60]!r}, this studentspec reads {VERSION}"
        )
    schemas.validate(schemas.Checkpoint, meta, marker)
    mine = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))  # the same plain types as the stored JSON
    key = _first_difference(meta["config"], mine)
    if key:
        raise StoreError(
            f"{path}: written for another config ({key} differs); resume with the same config, or remove it"
        )
    epoch = meta["epoch"]
    if epoch >= cfg.train.epochs:  # written after an epoch before the last: a larger one would resume into nothing
        raise StoreError(
            f"{marker}: field epoch: {epoch}, but a checkpoint of a {cfg.train.epochs}-epoch run is written "
            f"after epoch 1 to {cfg.train.epochs - 1}; remove it"
        )
    names = _table_names(meta["tables"], marker)
    try:
        state = torch.load(path / "state.pt", weights_only=True)
    except Exception as err:
        raise StoreError(f"{path}: corrupt checkpoint ({err.__class__.__name__})") from None
    try:
        loopstate.check_form(state)
    except loopstate.StateError as err:
        raise StoreError(f"{path / 'state.pt'}: {err}") from None
    tables = {}
    for name in names:
        file = path / f"{name}.parquet"
        if not file.is_file():
            raise StoreError(f"{file}: missing (listed in {MARKER}'s tables)")
        tables[name] = read_table(file, COLUMNS.get(name, EXTRA_COLUMNS), cfg.seeds)
        if len(tables[name]) and int(tables[name]["step"].max()) > state["step"]:
            raise StoreError(f"{file}: column 'step' holds steps after the checkpoint's step {state['step']}")
    return Checkpoint(epoch, state, tables, path / "state.pt")


def _table_names(names: list[str], marker: Path) -> list[str]:
    """The checkpoint's table names when every one is a run's table and the three every run has are there."""
    for i, name in enumerate(names):
        if not TABLE_NAME.fullmatch(name) or names.index(name) != i:
            raise StoreError(f"{marker}: field tables.{i}: {name[:60]!r} is not a run table name or appears twice")
    missing = [t for t in TABLES if t not in names]
    if missing:
        raise StoreError(f"{marker}: field tables: {missing[0]!r} missing")
    return names


def remove_checkpoint(out: str | Path) -> None:
    """Delete the checkpoint of run dir `out`: only a
    checkpoint dir studentspec proves it wrote (store.dirs.check_out)."""
    path = checkpoint_path(out)
    if path.is_dir() and not path.is_symlink():
        try:
            check_out(path, True, "checkpoint")
        except StoreError:
            return  # not provably ours: left alone
        shutil.rmtree(path)


def join(restored: dict[str, pd.DataFrame], name: str, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Table `name` of a run: the rows a resumed run's checkpoint restored, then this process's parts."""
    return pd.concat([restored[name], *parts] if restored else parts, ignore_index=True)
