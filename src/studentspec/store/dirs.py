"""Output directories studentspec writes: staged beside their final path, swapped in whole, never over what is not ours.

Ownership is decided by the marker of store/owner.py, never by a name: every folder studentspec creates
holds a `.studentspec` marker written first, which records every file written into it. Cleanup of killed
writers, --overwrite, stale-figure removal and rewriting a file touch only marked folders and recorded
regular files. Run dirs from before markers existed are replaced under the older rules (a complete run
dir holding only studentspec's entries, each of its type), and are never cleaned up.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..ensemble.atomic import temp_dir
from .owner import MARKER, Mark, foreign_entries, is_recorded_file, mark, owned, read_mark, record


class StoreError(ValueError):
    """A missing, incomplete or corrupt run directory; one-line message naming the file."""


# The fixed entries of a run dir: its files, `plot`'s figures, `converge`'s results, `report`'s page. A metric's own
# table (NAME.parquet) is not listed: the marker records it like every file written.
RUN_ENTRIES = frozenset(
    {
        "config.yaml",
        "scalars.parquet",
        "teachers.parquet",
        "students.parquet",
        "summary.json",
        "weights.npz",
        "report.html",
        "figures",
        "converge.json",
        "converge_teachers.parquet",
        "converge_students.parquet",
        "converge_hessian.parquet",
    }
)
# The metric tables of run dirs written before markers (and summary.json's list of tables) existed: history, never
# extended (a newer run's tables are in its marker and its summary.json).
LEGACY_TABLES = ("order",)
# Kinds of output dir: the files that mark a complete one (written last) and, for dirs written before markers
# existed, every entry it may hold.
_LEGACY_RUN = RUN_ENTRIES | {f"{t}.parquet" for t in LEGACY_TABLES}
DIR_KINDS = {
    "run": (("summary.json", "config.yaml"), _LEGACY_RUN),
    "population": (("population.json",), frozenset({"population.json", "figures"})),
    # `studentspec ode` (theory/ode_record.py): the order-parameter ODEs of a config
    "ode": (("ode.json",), frozenset({"ode.json", "ode.parquet", "ode_order.parquet", "config.yaml", "figures"})),
    # a run's checkpoint (store/checkpoint.py): its tables are a run dir's
    "checkpoint": (("checkpoint.json",), _LEGACY_RUN | {"checkpoint.json", "state.pt"}),
}
FIGURE_SUFFIXES = frozenset({".png", ".pdf"})
STAGE_SUFFIX = ".partial-4194304-XXXXXXXX"  # the longest pid, tempfile's 8 random characters
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)-[^.]{8}")
_FS_IOC_GETFLAGS = 0x80086601  # linux/fs.h: a file's inode flags
_UNDELETABLE_FLAGS = 0x10 | 0x20  # FS_IMMUTABLE_FL, FS_APPEND_FL: not even root may unlink or rename such an entry


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _dead_writer(d: Path, name: str, pid: int) -> Mark | None:
    """The marker of a leftover dir `d` when it proves that a writer of `name` on this host, now gone, made it."""
    m = owned(d)
    if m is None or m.pid != pid or m.host != socket.gethostname() or m.target != name or _alive(pid):
        return None
    return m


def remove_leftovers(parent: Path) -> None:
    """Clean up after writers killed in `parent`: a staging dir (`.NAME.partial-PID-*`) is deleted; an old run set
    aside (`.NAME.old-PID-*`) is put back where its replacement never arrived, else deleted. Only dirs whose marker
    proves it (written by that pid on this host for NAME, the
    pid gone, the run inside the one set aside) are touched."""
    if not parent.is_dir():
        return
    for d in parent.iterdir():
        m = _LEFTOVER.fullmatch(d.name)
        if m is None:
            continue
        mk = _dead_writer(d, m["name"], int(m["pid"]))
        if mk is None:
            continue
        if m["kind"] == "partial" and mk.kind != "aside":
            shutil.rmtree(d, ignore_errors=True)
        elif m["kind"] == "old" and mk.kind == "aside":
            _settle_aside(d, parent / mk.target, mk)


def _holds(aside: Path, mk: Mark) -> Path | None:
    """The run an aside dir holds, when its marker proves it (the same token, or an unmarked complete run for
    a run dir written before markers existed); None otherwise."""
    inner = aside / mk.target
    if inner.is_symlink() or not inner.is_dir():
        return None
    got = read_mark(inner)
    if mk.holds is not None:
        return inner if got is not None and got.token == mk.holds else None
    return inner if got is None and not _legacy_not_ours(inner, "run") else None


def _settle_aside(aside: Path, target: Path, mk: Mark) -> None:
    """Put the old run held by `aside` back at `target` if
    nothing arrived there, else delete it (both only if proven)."""
    inner = _holds(aside, mk)
    if inner is None:
        return
    if not (target.exists() or target.is_symlink()):
        os.replace(inner, target)
        (aside / MARKER).unlink()
        aside.rmdir()
    else:
        shutil.rmtree(aside, ignore_errors=True)


def _protected(path: Path) -> str:
    """Why `path` must never be replaced ("" when it may be): the working directory, a parent of it, home, a root."""
    p, cwd = path.resolve(), Path.cwd().resolve()
    if p == cwd or p in cwd.parents:
        return "it is the working directory or one of its parents"
    if p == Path.home().resolve():
        return "it is the home directory"
    if p == Path(p.anchor):
        return "it is a file-system root"
    return ""


def _is_file(path: Path) -> bool:
    """A regular file, not a link."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _legacy_figures(folder: Path) -> list[str]:
    """Entries of a figures folder of a run dir written before markers existed that are not regular .png/.pdf files."""
    return sorted(e.name for e in folder.iterdir() if e.suffix not in FIGURE_SUFFIXES or not _is_file(e))


def _legacy_not_ours(path: Path, kind: str) -> str:
    """Why `path`, a folder without a marker, is not a complete `kind` dir written before markers existed ("" when it
    is): its marker files present, every entry one of the kind's
    names AND of its type (figures: a folder of .png/.pdf files)."""
    markers, entries = DIR_KINDS[kind]
    if not all(_is_file(path / m) for m in markers):
        return f"it is not a complete studentspec {kind} dir (no {' and '.join(markers)})"
    foreign = []
    for e in sorted(path.iterdir()):
        if e.name == "figures" and e.is_dir() and not e.is_symlink():
            fm = owned(e, "figures")
            foreign += [f"figures/{n}" for n in (foreign_entries(e, fm) if fm else _legacy_figures(e))]
        elif e.name not in entries or e.name == "figures" or not _is_file(e):
            foreign.append(e.name)
    return _foreign(foreign)


def _foreign(names: list[str]) -> str:
    """The reason naming entries studentspec did not write ("" when there are none)."""
    if not names:
        return ""
    return f"it holds files studentspec did not write ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"


def _not_ours(path: Path, kind: str = "run") -> str:
    """Why `path` is not a complete `kind` dir (see DIR_KINDS) studentspec wrote ("" when it is)."""
    if path.is_symlink() or not path.is_dir():
        return f"it is not a {kind} directory"
    m = read_mark(path)
    if m is None:
        return _legacy_not_ours(path, kind)
    if m.kind != kind:
        return f"it is a studentspec {m.kind} dir, not a {kind} dir"
    markers = DIR_KINDS[kind][0]
    if not all(_is_file(path / f) for f in markers):
        return f"it is not a complete studentspec {kind} dir (no {' and '.join(markers)})"
    return _foreign(foreign_entries(path, m))


def _flags(path: Path) -> int:
    """The inode flags of a file or folder (0 where the file system does not tell)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return 0
    try:
        return struct.unpack("l", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 8))[0]
    except OSError:
        return 0
    finally:
        os.close(fd)


def _undeletable(path: Path) -> str:
    """Why the tree at `path` could not be deleted after a swap ("" when it can): a folder that is not writable
    (a read-only file system, its mode) or an immutable / append-only entry."""
    for folder, dirs, files in os.walk(path):
        here = Path(folder)
        if not os.access(here, os.W_OK | os.X_OK):
            return f"{here} is read-only"
        for name in [*dirs, *files]:
            if _flags(here / name) & _UNDELETABLE_FLAGS:
                return f"{here / name} is immutable or append-only"
    return ""


def check_out(out: str | Path, overwrite: bool, kind: str = "run") -> None:
    """Raise StoreError (one line) unless a `kind` dir (DIR_KINDS) can be written at `out`: call before any work.

    First, an old run set aside by a killed writer of a run dir beside `out` is put back (remove_leftovers), so the
    checks below see it. An existing `out` is replaced only with `overwrite`, and only when it is a complete dir of
    that kind studentspec wrote (its marker records everything in it; or a dir from before markers holding only
    studentspec's entries), every part of it can be deleted, and it is not the working directory, a parent of it,
    home or a root. The parent must be (or be creatable as) a writable directory.
    """
    out = Path(out)
    remove_leftovers(out.absolute().parent)
    _check_target(out, overwrite, kind)


def _check_target(out: Path, overwrite: bool, kind: str) -> None:
    """check_out's checks, without the cleanup."""
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise StoreError(f"{out}: already exists (pass --overwrite to replace it)")
        why = _protected(out) or _not_ours(out, kind) or _undeletable(out)
        if why:
            raise StoreError(f"{out}: --overwrite refuses to replace it: {why}")
    if len(f".{out.name}{STAGE_SUFFIX}".encode()) > 255:
        raise StoreError(f"{out}: name too long ({len(out.name.encode())} bytes; its staging name must fit in 255)")
    parent = out.absolute().parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise StoreError(f"{out}: cannot be created: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"{out}: cannot be created: {parent} is not writable")


def check_resumable(out: str | Path, manifest: str, kind: str) -> None:
    """Raise StoreError unless `out` is absent, empty, or a `kind` dir (sweep, reproduce) that a resumable command adds
    to: marked as one, or (written before markers existed) holding its `manifest` file. It never writes into a folder
    of other files."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise StoreError(f"{out}: is a dangling link; choose another --out")
    if not out.exists():
        return
    if not out.is_dir():
        raise StoreError(f"{out}: exists and is not a directory; choose another --out")
    m = read_mark(out)
    if m is not None and m.kind != kind:
        raise StoreError(f"{out}: is a studentspec {m.kind} dir, not a {kind} dir; choose another --out")
    if m is None and not _is_file(out / manifest) and any(out.iterdir()):
        raise StoreError(f"{out}: holds other files and is not a {kind} dir (no {manifest}); choose another --out")


def claim_resumable(out: str | Path, kind: str) -> None:
    """Create the resumable `kind` dir `out` (marked first), or mark it if it is an empty folder; a dir already
    marked, or written before markers existed, is left as it is. Call after check_resumable."""
    out = Path(out)
    if not out.exists():
        out.mkdir(parents=True)
        _record_in_parent(out)
        mark(out, kind)
    elif read_mark(out) is None and not any(out.iterdir()):
        mark(out, kind)


def _record_in_parent(folder: Path) -> None:
    """Record a folder just created inside a marked folder in that folder's marker."""
    if read_mark(folder.parent) is not None:
        record(folder.parent, [folder.name])


def check_files(folder: Path, names: Iterable[str]) -> None:
    """StoreError unless studentspec may write these files into `folder`: each is absent, or a regular file the
    folder's marker records (a folder without a marker: absent only)."""
    m = read_mark(folder) if folder.is_dir() and not folder.is_symlink() else None
    for name in names:
        path = folder / name
        if (path.exists() or path.is_symlink()) and (m is None or not is_recorded_file(folder, name, m)):
            raise StoreError(f"{path}: exists and studentspec has no record of writing it; move it away")


def claim_files(folder: Path, names: Iterable[str]) -> None:
    """check_files, then record the names in the folder's marker (when it has one) before they are written."""
    names = list(names)
    check_files(folder, names)
    if read_mark(folder) is not None:
        record(folder, names)


def check_figures(folder: str | Path) -> None:
    """StoreError unless figures may be drawn into `folder`: absent, empty, marked as a figure folder, or the figures
    folder of a run dir written before markers existed (regular .png/.pdf files only)."""
    folder = Path(folder)
    if not (folder.exists() or folder.is_symlink()):
        return
    if folder.is_symlink() or not folder.is_dir():
        raise StoreError(f"{folder}: exists and is not a folder of figures; choose another --out or move it away")
    m = read_mark(folder)
    if m is not None:
        if m.kind != "figures":
            raise StoreError(f"{folder}: is a studentspec {m.kind} dir, not a figure folder; choose another --out")
        return
    if not any(folder.iterdir()) or (_legacy_run_figures(folder) and not _legacy_figures(folder)):
        return
    raise StoreError(
        f"{folder}: is not a figure folder studentspec made (no {MARKER} marker); choose another --out or move it away"
    )


def _legacy_run_figures(folder: Path) -> bool:
    """Whether `folder` is the figures folder of a run dir written before markers existed."""
    run = folder.parent
    return folder.name == "figures" and read_mark(run) is None and not _legacy_not_ours(run, "run")


def claim_figures(folder: str | Path, names: Iterable[str]) -> None:
    """Make `folder` a figure folder studentspec owns (created and marked, or checked) and record `names` in it;
    StoreError when it is not ours or one of the names is a file studentspec did not write."""
    folder = Path(folder)
    check_figures(folder)
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        _record_in_parent(folder)
        folder.mkdir()
        mark(folder, "figures")
    elif read_mark(folder) is None:  # empty, or a pre-marker run's figures: all regular .png/.pdf files, adopted
        existing = sorted(e.name for e in folder.iterdir())
        mark(folder, "figures")
        record(folder, existing)
    claim_files(folder, names)


def remove_stale(folder: Path, keep: Iterable[str]) -> None:
    """Delete the recorded regular files of a marked folder that are not in `keep` (e.g. another point's figures)."""
    m = read_mark(folder)
    if m is None:
        return
    keep = set(keep)
    for name in m.files:
        if name not in keep and is_recorded_file(folder, name, m):
            (folder / name).unlink()


def write_dir(out: str | Path, overwrite: bool, fill: Callable[[Path], Any], kind: str = "run") -> Path:
    """Write a `kind` dir atomically: `fill(stage)` writes everything into a marked staging dir next to `out` (its
    marker files last), which is then swapped onto `out` (see check_out for what may be replaced)."""
    out = Path(out)
    check_out(out, overwrite, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = temp_dir(out.parent, f".{out.name}.partial-{os.getpid()}-")
    try:
        mark(stage, kind, target=out.name)
        fill(stage)
        record(stage, [e.name for e in stage.iterdir() if e.name != MARKER])
        _check_target(out, overwrite, kind)  # again: only what these checks allow may be replaced
        _swap_in(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return out


def _swap_in(stage: Path, out: Path) -> None:
    """Move the complete `stage` onto `out`: the old dir is renamed aside first (into a marked dir that names it)
    and deleted last, so at every instant `out` is a complete dir (old or new) or, for an instant, absent."""
    if not (out.exists() or out.is_symlink()):
        os.replace(stage, out)
        return
    old = read_mark(out)
    aside_dir = temp_dir(out.parent, f".{out.name}.old-{os.getpid()}-")
    mark(aside_dir, "aside", target=out.name, holds=old.token if old else None)
    aside = aside_dir / out.name
    os.replace(out, aside)
    try:
        os.replace(stage, out)
    except BaseException:
        os.replace(aside, out)  # put the old run back
        shutil.rmtree(aside_dir)
        raise
    _discard(aside_dir, out)


def _discard(aside_dir: Path, out: Path) -> None:
    """Delete the old run set aside after a successful swap; where that fails (a file made immutable meanwhile),
    move what is left to a visible name and say so in one line: the new run is in place either way."""
    try:
        shutil.rmtree(aside_dir)
        return
    except OSError as err:
        reason = f"{err.strerror or err.__class__.__name__}: {err.filename}"
    left = out.parent / f"{out.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        os.replace(aside_dir, left)
        where = f"what is left of it is at {left}"
    except OSError:
        where = f"what is left of it is at {aside_dir}"
    print(
        f"studentspec: warning: wrote {out}, but the old run it replaced could not be deleted ({reason}); {where}",
        file=sys.stderr,
    )
