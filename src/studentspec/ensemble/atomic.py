"""The one atomic file write: a file is either its old whole self or its new whole self, never half written.

Temporary files and folders get the modes an ordinary create would give under the process's umask
(tempfile makes them 0600 / 0700, which would hide results from the colleagues the umask admits).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def umask() -> int:
    """This process's umask, read without changing it where Linux tells it (/proc), else by setting it back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def temp_file(folder: Path, prefix: str) -> Path:
    """An empty new file `PREFIX*.tmp` in `folder` with the umask's mode (0666 & ~umask)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)
    return Path(tmp)


def temp_dir(folder: Path, prefix: str) -> Path:
    """A new empty folder `PREFIX*` in `folder` with the umask's mode (0777 & ~umask)."""
    path = Path(tempfile.mkdtemp(dir=folder, prefix=prefix))
    os.chmod(path, 0o777 & ~umask())
    return path


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call write(tmp_path) on a temporary name beside `path` (`.NAME.XXXXXXXX.tmp`), then rename it onto `path`."""
    path = Path(path)
    tmp = temp_file(path.parent, f".{path.name}.")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_all(folder: Path, writers: dict[str, Callable[[Path], Any]]) -> None:
    """Write every file to a temporary name in `folder`, then rename them into place in order.

    A failure while writing leaves the folder as it was (temporaries removed); the renames
    come last, converge.json after the tables, so a complete converge.json marks a finished set.
    """
    temps: dict[str, Path] = {}
    try:
        for name, write in writers.items():
            temps[name] = temp_file(folder, f".{name}.")
            write(temps[name])
        for name, tmp in temps.items():
            os.replace(tmp, folder / name)
    finally:
        for tmp in temps.values():
            if tmp.exists():
                tmp.unlink()
