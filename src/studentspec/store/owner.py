"""What studentspec owns, and how it knows: a marker file written first into every folder it creates.

The marker `.studentspec` (JSON) names the folder's kind (run, checkpoint, population, figures, sweep,
reproduce, aside), a random token, its target name (what a staging or set-aside folder is for), the
writer (pid, host, start time) and every file studentspec wrote into the folder. Cleaning up,
replacing and removing stale files touch only folders holding a valid marker and only the files it
records, of the expected type (regular files, not links). A name that merely looks like ours proves
nothing. Run dirs written before markers existed are recognized by store.dirs's older rules.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..ensemble.atomic import atomic_write, umask

MARKER = ".studentspec"
FORMAT = "studentspec.owner"
VERSION = 1
MAX_MARKER_BYTES = 1 << 20  # a marker lists file names only: anything larger is not ours
KINDS = frozenset({"run", "checkpoint", "population", "ode", "figures", "sweep", "reproduce", "aside"})


@dataclass
class Mark:
    """The content of a folder's marker."""

    kind: str
    token: str
    target: str
    pid: int
    host: str
    started: str
    files: list[str] = field(default_factory=list)
    holds: str | None = None  # an aside folder: the token of the folder it holds (None: an unmarked older run)

    def to_json(self) -> dict[str, object]:
        """The marker file's JSON object."""
        return {"format": FORMAT, "version": VERSION, **asdict(self)}


def new_mark(kind: str, target: str, holds: str | None = None) -> Mark:
    """A fresh marker of this process for a folder of `kind` made for `target`."""
    if kind not in KINDS:
        raise ValueError(f"unknown folder kind {kind!r}")
    return Mark(
        kind,
        secrets.token_hex(16),
        target,
        os.getpid(),
        socket.gethostname(),
        time.strftime("%Y-%m-%dT%H:%M:%S"),
        holds=holds,
    )


def _write(folder: Path, mark: Mark) -> None:
    atomic_write(folder / MARKER, lambda p: p.write_text(json.dumps(mark.to_json(), indent=1)))


def mark(folder: Path, kind: str, target: str | None = None, holds: str | None = None) -> Mark:
    """Write the marker into a folder this process has just created (call it first, before any other file)."""
    m = new_mark(kind, target if target is not None else folder.name, holds)
    _write(folder, m)
    return m


def read_mark(folder: Path) -> Mark | None:
    """The folder's marker when it holds a valid one (a regular file of the expected shape), else None."""
    path = Path(folder) / MARKER
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MARKER_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        return None
    try:
        m = Mark(
            kind=data["kind"],
            token=data["token"],
            target=data["target"],
            pid=data["pid"],
            host=data["host"],
            started=data["started"],
            files=data["files"],
            holds=data.get("holds"),
        )
    except KeyError:
        return None
    types_ok = (
        isinstance(m.kind, str)
        and m.kind in KINDS
        and isinstance(m.token, str)
        and len(m.token) == 32
        and isinstance(m.target, str)
        and isinstance(m.pid, int)
        and isinstance(m.host, str)
        and isinstance(m.files, list)
        and all(isinstance(f, str) and _plain(f) for f in m.files)
        and (m.holds is None or isinstance(m.holds, str))
    )
    return m if types_ok else None


def _plain(name: str) -> bool:
    """A plain entry name: no separator, not '.', '..' or the marker itself."""
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..", MARKER)


def owned(folder: Path, kind: str | None = None) -> Mark | None:
    """The marker of `folder` when it is a real folder (not a
    link) holding a valid marker of `kind` (any kind: None)."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return None
    m = read_mark(folder)
    return m if m is not None and (kind is None or m.kind == kind) else None


def record(folder: Path, names: list[str]) -> None:
    """Add `names` to the files the folder's marker records (call before writing them: a name recorded but absent is
    harmless, a file written but not recorded would no longer be ours)."""
    m = read_mark(folder)
    if m is None:
        raise ValueError(f"{folder}: holds no studentspec marker")
    new = [n for n in names if n not in m.files]
    if new:
        m.files = sorted({*m.files, *new})
        _write(folder, m)


def is_recorded_file(folder: Path, name: str, m: Mark) -> bool:
    """Whether folder/name is a regular file (not a link) that marker `m` records."""
    if name not in m.files:
        return False
    try:
        return stat.S_ISREG((Path(folder) / name).lstat().st_mode)
    except OSError:
        return False


def foreign_entries(folder: Path, m: Mark) -> list[str]:
    """Entries of a marked folder that are not studentspec's: not recorded, or not of the recorded type; a
    subfolder is studentspec's when it holds its own marker and nothing foreign itself (sorted, nested with '/')."""
    foreign = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name == MARKER and entry.is_file(follow_symlinks=False):
            continue
        if entry.is_dir(follow_symlinks=False):
            sub = read_mark(Path(entry.path))
            if sub is None or entry.name not in m.files:
                foreign.append(entry.name)
            else:
                foreign += [f"{entry.name}/{name}" for name in foreign_entries(Path(entry.path), sub)]
        elif not is_recorded_file(Path(folder), entry.name, m):
            foreign.append(entry.name)
    return foreign


def make_dir(path: Path, kind: str, target: str | None = None) -> Mark:
    """Create the folder `path` (its parents as needed), with the modes the umask allows, and mark it first."""
    path.mkdir(parents=True)
    return mark(path, kind, target)


def dir_mode() -> int:
    """The mode a new folder gets under this process's umask."""
    return 0o777 & ~umask()
