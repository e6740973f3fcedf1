"""Checkpoints of one long run, written whole beside its run dir: the trainer's tensors and the evaluations so far.

A checkpoint is the dir `.NAME.checkpoint` next to the run dir NAME: `state.pt` (tensors, numbers and
lists only: read back with torch.load(weights_only=True), never unpickled code), one Parquet file per
table of the evaluations made so far, and `checkpoint.json` (format, epoch, the run's config) written
last. It is replaced by swapping (store.dirs.write_dir), so a complete checkpoint exists at every
instant once the first is written; the run dir's writer removes it when the run is complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from ..config import Config
from .dirs import StoreError, write_dir
from .jsonfile import read_json, write_json

FORMAT = "studentspec.checkpoint"
VERSION = 1
MARKER = "checkpoint.json"


def checkpoint_path(out: str | Path) -> Path:
    """Where the checkpoint of the run dir `out` lives: `.NAME.checkpoint` beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.checkpoint"


def write_checkpoint(out: str | Path, cfg: Config, epoch: int, state: dict[str, Any], tables: dict[str, pd.DataFrame]) -> Path:
    """Write (or replace, by swapping) the checkpoint of run dir `out` after `epoch` epochs."""

    def fill(stage: Path) -> None:
        torch.save(state, stage / "state.pt")
        for name, frame in tables.items():
            frame.to_parquet(stage / f"{name}.parquet", index=False)
        write_json(stage / MARKER, {"format": FORMAT, "version": VERSION, "epoch": epoch, "tables": sorted(tables),
                                    "config": cfg.to_dict()})

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


def read_checkpoint(out: str | Path, cfg: Config) -> tuple[int, dict[str, Any], dict[str, pd.DataFrame]] | None:
    """(epoch, state, tables) of run dir `out`'s checkpoint, None when there is none; StoreError (one line) when it
    is incomplete, corrupt, or was written for another config."""
    path = checkpoint_path(out)
    if not path.exists():
        return None
    meta = read_json(path / MARKER) if (path / MARKER).is_file() else None
    if meta is None or meta.get("format") != FORMAT:
        raise StoreError(f"{path}: not a complete studentspec checkpoint (no {MARKER})")
    if meta.get("version") != VERSION:
        raise StoreError(f"{path}: checkpoint version {meta.get('version')!r}, this studentspec reads {VERSION}")
    mine = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))  # the same plain types as the stored JSON
    key = _first_difference(meta.get("config"), mine)
    if key:
        raise StoreError(f"{path}: written for another config ({key} differs); resume with the same config, or remove it")
    try:
        state = torch.load(path / "state.pt", weights_only=True)
        tables = {name: pd.read_parquet(path / f"{name}.parquet") for name in meta["tables"]}
    except Exception as err:
        raise StoreError(f"{path}: corrupt checkpoint ({err.__class__.__name__})") from None
    return int(meta["epoch"]), state, tables


def remove_checkpoint(out: str | Path) -> None:
    """Delete the checkpoint of run dir `out` (only a dir holding studentspec's checkpoint marker)."""
    path = checkpoint_path(out)
    if path.is_dir() and not path.is_symlink() and (path / MARKER).is_file():
        shutil.rmtree(path)


def join(restored: dict[str, pd.DataFrame], name: str, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Table `name` of a run: the rows a resumed run's checkpoint restored, then this process's parts."""
    return pd.concat([restored[name], *parts] if restored else parts, ignore_index=True)
