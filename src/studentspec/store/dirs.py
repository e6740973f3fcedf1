"""Output directories studentspec writes: staged beside their final path, swapped in whole, never over what is not ours."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


class StoreError(ValueError):
    """A missing, incomplete or corrupt run directory; one-line message naming the file."""



# What a run dir written by studentspec may hold: its files, `plot`'s figures, `converge`'s results, `report`'s page.
RUN_ENTRIES = frozenset({"config.yaml", "scalars.parquet", "teachers.parquet", "students.parquet", "summary.json", "weights.npz", "report.html",
                         "order.parquet", "figures", "converge.json", "converge_teachers.parquet", "converge_students.parquet",
                         "converge_hessian.parquet"})
# Kinds of output dir: the files that mark a complete one (written last) and every entry it may hold.
DIR_KINDS = {
    "run": (("summary.json", "config.yaml"), RUN_ENTRIES),
    "population": (("population.json",), frozenset({"population.json", "figures"})),
    # a run's checkpoint (store/checkpoint.py): its tables are a run dir's
    "checkpoint": (("checkpoint.json",), RUN_ENTRIES | {"checkpoint.json", "state.pt"}),
}
FIGURE_SUFFIXES = frozenset({".png", ".pdf"})
STAGE_SUFFIX = ".partial-4194304-XXXXXXXX"  # the longest pid, tempfile's 8 random characters
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)-[^.]{8}")
_TMP_FILE = re.compile(r"\.(?P<name>.+)\.[^.]{8}\.tmp")  # atomic_write's temporary name


def _staged_name(name: str) -> str | None:
    """The entry a staging name (check_out's dirs, atomic_write's files) is written for; None for other names."""
    m = _LEFTOVER.fullmatch(name) or _TMP_FILE.fullmatch(name)
    return m["name"] if m else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_leftovers(parent: Path) -> None:
    """Clean up after killed writers in `parent`: a staging dir (`.NAME.partial-PID-*`) whose process is gone is
    deleted; a set-aside old run (`.NAME.old-PID-*`) is put back where its replacement never arrived, else deleted.
    Only dirs of studentspec's naming whose pid is not alive are touched."""
    if not parent.is_dir():
        return
    for d in parent.iterdir():
        m = _LEFTOVER.fullmatch(d.name)
        if m is None or not d.is_dir() or d.is_symlink() or _alive(int(m["pid"])):
            continue
        target, aside = parent / m["name"], d / m["name"]
        if m["kind"] == "old" and aside.is_dir() and not (target.exists() or target.is_symlink()):
            os.replace(aside, target)
        shutil.rmtree(d, ignore_errors=True)


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


def not_figures(folder: Path) -> list[str]:
    """Names in `folder` that are not figure files studentspec writes (.png, .pdf), sorted."""
    return sorted(e.name for e in folder.iterdir() if e.suffix not in FIGURE_SUFFIXES or not e.is_file())


def _not_ours(path: Path, kind: str = "run") -> str:
    """Why `path` is not a complete `kind` dir (see DIR_KINDS) studentspec wrote ("" when it is)."""
    markers, entries = DIR_KINDS[kind]
    if path.is_symlink() or not path.is_dir():
        return f"it is not a {kind} directory"
    if not all((path / m).is_file() for m in markers):
        return f"it is not a complete studentspec {kind} dir (no {' and '.join(markers)})"
    foreign = sorted(e.name for e in path.iterdir() if e.name not in entries)
    if (path / "figures").is_dir():
        foreign += [f"figures/{name}" for name in not_figures(path / "figures")]
    if foreign:
        return f"it holds files studentspec did not write ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})"
    return ""


def check_out(out: str | Path, overwrite: bool, kind: str = "run") -> None:
    """Raise StoreError (one line) unless a `kind` dir (DIR_KINDS) can be written at `out`: call before any work.

    An existing `out` is replaced only with `overwrite`, and only when it is a complete dir of that
    kind studentspec wrote (nothing else in it) and not the working directory, a parent of it, home
    or a root. The parent must be (or be creatable as) a writable directory.
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise StoreError(f"{out}: already exists (pass --overwrite to replace it)")
        why = _protected(out) or _not_ours(out, kind)
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


def check_resumable(out: str | Path, marker: str, what: str, own: frozenset[str] = frozenset()) -> None:
    """Raise StoreError unless `out` is absent, a `what` dir (holding `marker`) that a resumable command
    (sweep, reproduce) adds to, or holds nothing but `own` entries and staging files (an unfinished start):
    it never writes into a folder of other files."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise StoreError(f"{out}: is a dangling link; choose another --out")
    if not out.exists():
        return
    if not out.is_dir():
        raise StoreError(f"{out}: exists and is not a directory; choose another --out")
    if (out / marker).is_file():
        return
    foreign = [e.name for e in out.iterdir() if e.name not in own and _staged_name(e.name) not in own]
    if foreign:
        raise StoreError(f"{out}: holds other files and is not a {what} dir (no {marker}); choose another --out")


def _swap_in(stage: Path, out: Path) -> None:
    """Move the complete `stage` onto `out`: the old dir is renamed aside first and deleted last,
    so at every instant `out` is a complete run dir (old or new) or, for an instant, absent."""
    if not out.exists():
        os.replace(stage, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-{os.getpid()}-"))
    aside = old / out.name
    os.replace(out, aside)
    try:
        os.replace(stage, out)
    except BaseException:
        os.replace(aside, out)  # put the old run back
        os.rmdir(old)
        raise
    shutil.rmtree(old)


def write_dir(out: str | Path, overwrite: bool, fill: Callable[[Path], Any], kind: str = "run") -> Path:
    """Write a `kind` dir atomically: `fill(stage)` writes everything into a staging dir next to `out`
    (its marker files last), which is then swapped onto `out` (see check_out for what may be replaced)."""
    out = Path(out)
    check_out(out, overwrite, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out.parent)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-{os.getpid()}-"))
    try:
        fill(stage)
        _swap_in(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return out
