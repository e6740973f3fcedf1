"""Probe cases for image inputs (the probe corpus's style, tests/test_probe.py): bad image files, image MLPs whose
input_dim disagrees with the images, a conv teacher checkpoint of another image shape, an image set that is not
installed. Each runs `studentspec run` in a fresh working dir: exit 2, one line naming the file or key, no
traceback, nothing in the working dir written, changed or deleted."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from image_files import write_mnist
from probe import assert_refused, snapshot
from studentspec import images, pipelines
from studentspec.cli import main
from studentspec.conv.teacher import save_checkpoint

MLP = ["teacher.net=mlp", "teacher.recipe=deep", "teacher.widths=[3]", "seeds=[1]", "data.n_train=20", "data.n_eval=10",
       "train.epochs=1", "train.steps_per_epoch=2"]
IDX = ["data.kind=fashion_mnist", "data.root=fm"]


ROOT = Path(__file__).resolve().parents[1]
MLP_PRESET = str(ROOT / "configs" / "images_mlp_quick.yaml")
CONV_PRESET = str(ROOT / "configs" / "images_conv_quick.yaml")


def run_cmd(*extra: str) -> list[str]:
    return ["run", MLP_PRESET, *MLP, *extra, "--out", "out", "--quiet"]


def files(damage: Callable[[Path], None] = lambda folder: None) -> Callable[[Path], None]:
    """Fashion-MNIST-format files (.gz) in ws/fm, then `damage` applied to that folder."""

    def make(ws: Path) -> None:
        write_mnist(ws / "fm", n_train=30, n_test=20, gz=True)
        damage(ws / "fm")

    return make


def truncate(name: str) -> Callable[[Path], None]:
    def cut(folder: Path) -> None:
        raw = (folder / name).read_bytes()
        (folder / name).write_bytes(raw[: len(raw) // 2])

    return cut


def rewrite(name: str, edit: Callable[[bytearray], None]) -> Callable[[Path], None]:
    """Decompress `name`, edit its idx bytes, compress it again (a valid .gz of a bad idx file)."""

    def change(folder: Path) -> None:
        raw = bytearray(gzip.decompress((folder / name).read_bytes()))
        edit(raw)
        (folder / name).write_bytes(gzip.compress(bytes(raw)))

    return change


def set_byte(i: int, v: int) -> Callable[[bytearray], None]:
    def edit(raw: bytearray) -> None:
        raw[i] = v

    return edit


def drop_tail(raw: bytearray) -> None:
    del raw[-100:]


def checkpoint_28(ws: Path) -> None:
    """A random conv teacher of 28x28 mnist images saved as a checkpoint (ws/T.pt), and mnist files of 20x20."""
    write_mnist(ws / "m28", n_train=10, n_test=10)
    s = pipelines.build(pipelines.load_config(None, ["teacher.net=conv", "teacher.recipe=deep", "teacher.widths=[2]",
                                                     "data.kind=mnist", f"data.root={ws / 'm28'}", "data.n_eval=10"]))
    save_checkpoint(s.ckpt, ws / "T.pt")
    small = ws / "m20"
    small.mkdir()
    for name, n in (("train", 8), ("t10k", 4)):
        (small / f"{name}-images-idx3-ubyte").write_bytes(
            bytes([0, 0, 8, 3]) + b"".join(v.to_bytes(4, "big") for v in (n, 20, 20)) + bytes(n * 400))
        (small / f"{name}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(n))


@dataclass
class Case:
    id: str
    argv: list[str]
    words: tuple[str, ...]
    setup: Callable[[Path], None] = field(default=lambda ws: None)


CASES = [
    Case("idx-train-images-truncated-gz", run_cmd(*IDX), ("train-images-idx3-ubyte.gz", "truncated"),
         files(truncate("train-images-idx3-ubyte.gz"))),
    Case("idx-test-labels-truncated-gz", run_cmd(*IDX), ("t10k-labels-idx1-ubyte.gz", "truncated"),
         files(truncate("t10k-labels-idx1-ubyte.gz"))),
    Case("idx-not-gzip", run_cmd(*IDX), ("train-labels-idx1-ubyte.gz", "gzip"),
         files(lambda f: (f / "train-labels-idx1-ubyte.gz").write_bytes(b"plain bytes, not gzip"))),
    Case("idx-bad-magic", run_cmd(*IDX), ("t10k-images-idx3-ubyte.gz", "bad magic"),
         files(rewrite("t10k-images-idx3-ubyte.gz", set_byte(2, 0x0D)))),
    Case("idx-short-body", run_cmd(*IDX), ("t10k-images-idx3-ubyte.gz", "header says"),
         files(rewrite("t10k-images-idx3-ubyte.gz", drop_tail))),
    Case("idx-label-out-of-range", run_cmd(*IDX), ("train-labels-idx1-ubyte.gz", "0..9"),
         files(rewrite("train-labels-idx1-ubyte.gz", set_byte(8, 12)))),
    Case("idx-file-missing", run_cmd(*IDX), ("t10k-labels-idx1-ubyte",),
         files(lambda f: (f / "t10k-labels-idx1-ubyte.gz").unlink())),
    Case("image-mlp-input-dim-mismatch", run_cmd(*IDX, "input_dim=100"), ("input_dim", "784"), files()),
    Case("image-mlp-n-train-too-large", run_cmd(*IDX, "data.n_train=31"), ("data.n_train", "30 training images"), files()),
    Case("gaussian-like-input-dim-mismatch",
         run_cmd("data.kind=gaussian_like", "data.like=fashion_mnist", "data.root=fm", "input_dim=10"), ("input_dim",),
         files()),
    Case("gaussian-like-without-a-set", run_cmd("data.kind=gaussian_like"), ("data.like",)),
    Case("fashion-mnist-not-installed", run_cmd("data.kind=fashion_mnist"), ("dataset-fashion-mnist", "data.root")),
    Case("conv-net-on-uniform-inputs", ["run", CONV_PRESET, "data.kind=uniform", "--out", "out"], ("teacher.net",)),
    Case("conv-checkpoint-of-another-image-shape",
         ["run", CONV_PRESET, "data.kind=mnist", "data.root=m20", "teacher.checkpoint=T.pt", "teacher.widths=[2]", "--out", "out"],
         ("T.pt", "data.root", "[1, 20, 20]", "[1, 28, 28]"), checkpoint_28),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_probe_images(case: Case, tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    # the Debian package's folder as if not installed: only data.root points at files
    monkeypatch.setitem(images.DEFAULT_ROOTS, "fashion_mnist", tmp_path / "not-installed")
    case.setup(ws)
    capsys.readouterr()
    before = snapshot(ws)
    assert_refused(main(case.argv), capsys, case.words, ws, before)
