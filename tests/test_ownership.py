"""What studentspec owns, and how it knows: a `.studentspec` marker written first, never a name that looks like ours.

Each case puts a user's files where a name-based rule would have taken them for studentspec's, runs the real
command (`studentspec.cli.main`) and checks that every user file, folder, link and mode is still there byte for
byte. Killed writers are real processes killed at the worst moment (os._exit inside the write).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from probe import snapshot
from studentspec import store
from studentspec.cli import main
from studentspec.store import owner
from studentspec.store.checkpoint import remove_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "two_layer_quick.yaml")
TINY = ["seeds=[1]", "input_dim=4", "output_dim=3", "teacher.widths=[2]", "student.multi=2", "data.n_train=40",
        "data.n_eval=20", "train.steps_per_epoch=5", "train.epochs=1"]


def run(out: Path, *extra: str) -> int:
    return main(["run", CONFIG, *TINY, *extra, "--out", str(out), "--quiet"])


def one_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and err.startswith("studentspec: error: "), err
    for w in words:
        assert w in err, (w, err)
    return err


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


KILLED_WRITER = """
import os, sys
from pathlib import Path
from studentspec.store import dirs
out, when = Path(sys.argv[1]), sys.argv[2]
real = os.replace
def replace(src, dst):
    real(src, dst)
    if when == "between-renames" and ".old-" in str(dst) and Path(dst).name == out.name:
        os._exit(9)  # killed after setting the old run aside, before the new one arrived
os.replace = replace
def fill(stage):
    (stage / "config.yaml").write_text("new")
    if when == "fill":
        os._exit(9)  # killed while writing the new run
    (stage / "summary.json").write_text("{}")
dirs.write_dir(out, True, fill)
"""


def killed_writer(out: Path, when: str) -> None:
    """A real process that dies while writing run dir `out` (`fill`) or between its two renames."""
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out), when], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("own") / "run"
    assert run(out) == 0
    return out


# ---------------------------------------------------------------- cleanup after killed writers


@pytest.mark.parametrize("name", [".thesis.old-2019-versions", ".o.partial-{dead}-abcdefgh", ".o.old-{dead}-abcdefgh",
                                  ".notes.partial-{dead}-12345678", ".o.old-{live}-abcdefgh"])
def test_a_user_folder_named_like_a_leftover_is_never_touched(tmp_path: Path, name: str) -> None:
    user = tmp_path / name.format(dead=dead_pid(), live=os.getpid())
    (user / "o").mkdir(parents=True)
    (user / "o" / "summary.json").write_text("{}")  # even a run-shaped inside proves nothing
    (user / "o" / "config.yaml").write_text("mine")
    (user / "draft.tex").write_text("years of work")
    before = snapshot(tmp_path)
    assert run(tmp_path / "o") == 0
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before


def test_a_forged_marker_of_another_writer_is_not_proof(tmp_path: Path) -> None:
    """A marker naming a live pid, another host or another target leaves the folder alone."""
    pid = dead_pid()
    for i, (mpid, host, target) in enumerate([(os.getpid(), None, "o"), (pid, "elsewhere", "o"), (pid, None, "other")]):
        d = tmp_path / f".o.partial-{pid}-abcdef{i:02d}"
        d.mkdir()
        m = owner.new_mark("run", target)
        m.pid, m.host = mpid, host or m.host
        (d / owner.MARKER).write_text(json.dumps(m.to_json()))
        (d / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert run(tmp_path / "o") == 0
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before


def test_a_killed_writers_staging_dir_is_removed(tmp_path: Path, tiny: Path) -> None:
    shutil.copytree(tiny, tmp_path / "o")
    killed_writer(tmp_path / "o", "fill")
    assert any(".o.partial-" in p.name for p in tmp_path.iterdir())
    assert run(tmp_path / "p") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "p"]


def test_an_old_run_set_aside_is_restored_and_then_not_replaced_without_overwrite(tmp_path: Path, tiny: Path,
                                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(tiny, tmp_path / "o")
    before = snapshot(tmp_path / "o")
    killed_writer(tmp_path / "o", "between-renames")
    assert not (tmp_path / "o").exists()
    assert run(tmp_path / "o") == 2  # the restored run is in the way: no --overwrite, no replacement
    one_line(capsys, "already exists", "--overwrite")
    assert snapshot(tmp_path / "o") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_an_old_run_set_aside_is_deleted_once_its_replacement_arrived(tmp_path: Path, tiny: Path) -> None:
    shutil.copytree(tiny, tmp_path / "o")
    killed_writer(tmp_path / "o", "between-renames")
    assert run(tmp_path / "o") == 2  # restored first
    capture = tmp_path / "o"
    assert (capture / "summary.json").is_file()
    assert run(tmp_path / "o", "train.lr=0.02", "--overwrite") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


# ---------------------------------------------------------------- --overwrite


@pytest.mark.parametrize("how", ["folder-named-like-a-file", "link-named-like-a-file", "unrecorded-file", "unmarked-figures",
                                 "user-file-in-figures", "link-to-figures", "marker-of-another-kind"])
def test_overwrite_refuses_a_run_dir_holding_what_studentspec_did_not_write(tmp_path: Path, tiny: Path, how: str,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    shutil.copytree(tiny, out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.csv").write_text("1,2")
    if how == "folder-named-like-a-file":
        (out / "weights.npz").unlink()
        (out / "weights.npz").mkdir()
        (out / "weights.npz" / "notes.txt").write_text("mine")
    elif how == "link-named-like-a-file":
        (out / "weights.npz").unlink()
        (out / "weights.npz").symlink_to(elsewhere / "data.csv")
    elif how == "unrecorded-file":
        (out / "converge.json").write_text("{}")  # a name studentspec uses, but it never wrote this one
    elif how == "unmarked-figures":
        (out / "figures").mkdir()
        (out / "figures" / "mse.png").write_bytes(b"my own figure")
    elif how == "user-file-in-figures":
        assert main(["plot", str(out)]) == 0
        (out / "figures" / "sketch.png").write_bytes(b"mine")
    elif how == "link-to-figures":
        (out / "figures").symlink_to(elsewhere)
    else:
        m = json.loads((out / owner.MARKER).read_text())
        m["kind"] = "sweep"
        (out / owner.MARKER).write_text(json.dumps(m))
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert run(out, "--overwrite") == 2
    one_line(capsys, "refuses")
    assert snapshot(tmp_path) == before


def test_overwrite_of_a_run_dir_from_before_markers_keeps_the_older_rules(tmp_path: Path, tiny: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    shutil.copytree(tiny, out)
    (out / owner.MARKER).unlink()  # as written before markers existed
    assert store.load_run(out).config.seeds == [1]
    (out / "weights.npz").unlink()
    (out / "weights.npz").mkdir()  # a folder where the older rule expects a file: refused
    before = snapshot(tmp_path)
    assert run(out, "--overwrite") == 2
    one_line(capsys, "weights.npz")
    assert snapshot(tmp_path) == before
    shutil.rmtree(out / "weights.npz")
    shutil.copy(tiny / "weights.npz", out / "weights.npz")
    assert run(out, "train.lr=0.02", "--overwrite") == 0
    assert owner.owned(out, "run") is not None and sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_an_immutable_file_in_the_old_run_is_found_before_training(tmp_path: Path, tiny: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    shutil.copytree(tiny, out)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(out / "weights.npz")], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE and a file system with inode flags)")
    try:
        before = snapshot(tmp_path)
        assert run(out, "--overwrite") == 2
        one_line(capsys, "immutable", "weights.npz")
        assert snapshot(tmp_path) == before
    finally:
        subprocess.run(["chattr", "-i", str(out / "weights.npz")], check=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes; the immutable-file case covers the same check")
def test_a_read_only_old_run_is_found_before_training(tmp_path: Path, tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    shutil.copytree(tiny, out)
    os.chmod(out, 0o555)
    try:
        assert run(out, "--overwrite") == 2
        one_line(capsys, "read-only")
    finally:
        os.chmod(out, 0o755)


# ---------------------------------------------------------------- figures, reports, converge


def test_plot_never_writes_into_a_folder_of_the_users_figures(tmp_path: Path, tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "mse.png").write_bytes(b"my own figure")
    before = snapshot(tmp_path)
    assert main(["plot", str(tiny), "--out", str(figs)]) == 2
    one_line(capsys, "figs", "not a figure folder studentspec made")
    assert snapshot(tmp_path) == before


def test_plot_into_its_own_folder_leaves_a_users_file_there_alone(tmp_path: Path, tiny: Path) -> None:
    figs = tmp_path / "figs"
    assert main(["plot", str(tiny), "--out", str(figs)]) == 0
    (figs / "notes.txt").write_text("mine")
    assert main(["plot", str(tiny), "--out", str(figs)]) == 0
    assert (figs / "notes.txt").read_text() == "mine"


def test_plot_refuses_a_user_file_with_a_figure_name_in_its_own_folder(tmp_path: Path, tiny: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    figs = tmp_path / "figs"
    assert main(["plot", str(tiny), "--out", str(figs)]) == 0
    record = json.loads((figs / owner.MARKER).read_text())
    record["files"].remove("mse.png")  # as if the user had put their own mse.png there
    (figs / owner.MARKER).write_text(json.dumps(record))
    (figs / "mse.png").write_bytes(b"mine")
    before = snapshot(figs)
    assert main(["plot", str(tiny), "--out", str(figs)]) == 2
    one_line(capsys, "mse.png", "no record of writing it")
    assert snapshot(figs) == before  # refused before any figure was written, not after the first two


def test_report_never_replaces_a_page_it_has_no_record_of(tmp_path: Path, tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    shutil.copytree(tiny, out)
    (out / "report.html").write_text("<html><title>studentspec notes of mine</title></html>")
    before = snapshot(tmp_path)
    assert main(["report", str(out)]) == 2
    one_line(capsys, "report.html", "no record of writing it")
    assert snapshot(tmp_path) == before


def test_report_replaces_its_own_page(tmp_path: Path, tiny: Path) -> None:
    out = tmp_path / "o"
    shutil.copytree(tiny, out)
    assert main(["report", str(out)]) == 0
    first = (out / "report.html").stat().st_mtime_ns
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").stat().st_mtime_ns >= first
    assert "report.html" in owner.read_mark(out).files


def test_converge_refuses_before_any_work_to_replace_a_file_it_did_not_write(tmp_path: Path, tiny: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    shutil.copytree(tiny, out)
    (out / "converge.json").write_text('{"mine": true}')
    before = snapshot(tmp_path)
    assert main(["converge", str(out)]) == 2
    one_line(capsys, "converge.json", "no record of writing it")
    assert snapshot(tmp_path) == before


def test_a_checkpoint_folder_that_is_not_ours_is_left_alone(tmp_path: Path) -> None:
    user = tmp_path / ".o.checkpoint"
    user.mkdir()
    (user / "checkpoint.json").write_text("{}")  # the marker name of old: proves nothing
    (user / "thesis.tex").write_text("mine")
    before = snapshot(tmp_path)
    remove_checkpoint(tmp_path / "o")
    assert snapshot(tmp_path) == before


def test_resumable_commands_add_only_to_their_own_kind_of_dir(tmp_path: Path) -> None:
    d = tmp_path / "sw"
    d.mkdir()
    store.check_resumable(d, "sweep.json", "sweep")  # empty: may be started
    store.claim_resumable(d, "sweep")
    assert owner.owned(d, "sweep") is not None
    (d / "notes.txt").write_text("mine")
    store.check_resumable(d, "sweep.json", "sweep")  # ours: a user's extra file is left alone, not a reason to refuse
    with pytest.raises(store.StoreError, match="studentspec sweep dir, not a reproduce dir"):
        store.check_resumable(d, "reproduce.json", "reproduce")
    other = tmp_path / "other"
    other.mkdir()
    (other / ".sweep.lock").write_text("")  # a name studentspec uses proves nothing
    with pytest.raises(store.StoreError, match="holds other files and is not a sweep dir"):
        store.check_resumable(other, "sweep.json", "sweep")


# ---------------------------------------------------------------- modes follow the umask


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o027])
def test_results_follow_the_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        out = tmp_path / "o"
        assert run(out, "train.checkpoint_every=1", "train.epochs=2") == 0
        assert main(["plot", str(out)]) == 0
    finally:
        os.umask(old)
    for p in [out, *out.rglob("*")]:
        want = (0o777 if p.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode), oct(want))


def test_every_file_of_a_run_dir_is_recorded_in_its_marker(tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert run(out) == 0
    assert main(["plot", str(out)]) == 0
    m = owner.read_mark(out)
    assert m is not None and m.kind == "run" and m.target == "o" and m.pid == os.getpid()
    assert set(m.files) == {p.name for p in out.iterdir()} - {owner.MARKER}
    f = owner.read_mark(out / "figures")
    assert f is not None and f.kind == "figures" and set(f.files) == {p.name for p in (out / "figures").iterdir()} - {owner.MARKER}
