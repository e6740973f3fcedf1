"""The one atomic file write: a file is either its old whole self or its new whole self, never half written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call write(tmp_path) on a temporary name beside `path` (`.NAME.XXXXXXXX.tmp`), then rename it onto `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_all(folder: Path, writers: dict[str, Callable[[Path], Any]]) -> None:
    """Write every file to a temporary name in `folder`, then rename them into place in order.

    A failure while writing leaves the folder as it was (temporaries removed); the renames
    come last, converge.json after the tables, so a complete converge.json marks a finished set.
    """
    temps: dict[str, Path] = {}
    try:
        for name, write in writers.items():
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            os.close(fd)
            temps[name] = Path(tmp)
            write(temps[name])
        for name, tmp in temps.items():
            os.replace(tmp, folder / name)
    finally:
        for tmp in temps.values():
            if tmp.exists():
                tmp.unlink()
