"""Strict JSON files, written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..ensemble.atomic import atomic_write
from . import schemas
from .dirs import StoreError, claim_files
from .owner import read_mark


def strict_json(value: Any) -> Any:
    """`value` with every non-finite float (NaN, +-inf) as None: strict JSON that any reader accepts."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON file atomically, strict (NaN and inf
    become null); in a marked folder only over a file it records."""
    if read_mark(Path(path).parent) is not None:
        claim_files(Path(path).parent, [Path(path).name])
    atomic_write(path, lambda p: p.write_text(json.dumps(strict_json(data), indent=1, default=str, allow_nan=False)))


def read_json(path: Path, check: bool = True) -> dict[str, Any]:
    """Read a JSON file written by studentspec, checked against its file kind's schema (store/schemas.py) when it has
    one (and `check`); StoreError names the file (and the
    field) when it is corrupt or does not hold what its kind must."""
    try:
        data = json.loads(Path(path).read_text())
    except (
        OSError,
        ValueError,
        RecursionError,
    ) as err:  # ValueError: bad JSON, bad UTF-8, an integer of too many digits
        raise StoreError(f"{path}: unreadable or corrupt ({err.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise StoreError(f"{path}: expected a JSON object")
    return schemas.check(path, data) if check else data
