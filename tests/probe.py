"""What every probe case checks: one line naming the cause, no traceback, the working dir byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MAX_LINE = 400  # a message quotes at most ~100 characters of any value; the whole line stays short


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | str | None]]:
    """Every path under `folder`, links not followed: its mode and a file's bytes, a link's target, None otherwise."""
    out: dict[str, tuple[int, bytes | str | None]] = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            content: bytes | str | None = os.readlink(p)
        elif p.is_file() and os.access(p, os.R_OK):
            content = p.read_bytes()
        else:
            content = None
        out[str(p.relative_to(folder))] = (st.st_mode, content)
    return out


def assert_refused(rc: int | str | None, capsys: pytest.CaptureFixture[str], words: tuple[str, ...], ws: Path,
                   before: dict[str, tuple[int, bytes | str | None]]) -> None:
    """Exit 2, one stderr line `studentspec: error: ...` holding every word, no traceback, `ws` unchanged."""
    out = capsys.readouterr()
    err = out.err.strip()
    assert rc == 2, (rc, err[:1000], out.out[:1000])
    assert "\n" not in err and "Traceback" not in err, err[:2000]
    assert err.startswith("studentspec: error: "), err[:1000]
    assert len(err) <= MAX_LINE, f"{len(err)} characters: {err[:1000]}"
    for word in words:
        assert word in err, (word, err[:1000])
    assert snapshot(ws) == before, "the working directory changed"
