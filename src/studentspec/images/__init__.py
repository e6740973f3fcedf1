"""Image data sets from their standard local files (CIFAR-10 pickles, MNIST and Fashion-MNIST idx) and batched
augmentation: what the conv pipeline (conv/) and MLPs on flattened images (mlp/data/) both read.

Nothing is downloaded: a missing or malformed data set raises ConfigError naming the path and
what is missing. Images stay uint8 [N, C, H, W] in memory; augmentation (random crop with
zero padding, horizontal flip) and per-channel normalization are batched torch ops driven by
a seeded generator, with no per-image Python loop.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import ConfigError

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FILES = (*CIFAR_TRAIN, "test_batch", "batches.meta")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_URL = "https://yann.lecun.com/exdb/mnist/ (or any mirror of the four idx files)"
FASHION_PACKAGE = "dataset-fashion-mnist"  # Debian's package of Zalando's Fashion-MNIST (MIT licence)
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# data.root when the config gives none: where a distribution package puts the files (used only when it exists)
DEFAULT_ROOTS: dict[str, Path] = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}


def how_to_get(kind: str) -> str:
    """One line telling where to obtain a data set and how to point studentspec at it."""
    if kind == "cifar10":
        return (
            f"download {CIFAR_URL} (163 MB) and pass data.root=PATH pointing at the archive, "
            f"at its extracted '{CIFAR_FOLDER}' folder, or at the folder holding either"
        )
    if kind == "fashion_mnist":
        return (
            f"install the Debian package {FASHION_PACKAGE} (apt-get install {FASHION_PACKAGE}), which puts its four "
            f"idx .gz files in {DEFAULT_ROOTS['fashion_mnist']}, or pass data.root=PATH to a folder holding them"
        )
    return f"put {', '.join(MNIST_FILES)} (optionally .gz) from {MNIST_URL} in one folder and pass data.root=PATH"


def resolve_root(kind: str, root: str | Path | None) -> Path:
    """`data.root`, or the data set's package folder when none is given and it exists; ConfigError otherwise."""
    if root is not None:
        return Path(root)
    default = DEFAULT_ROOTS.get(kind)
    if default is not None and default.is_dir():
        return default
    raise ConfigError(f"data.root: data.kind={kind} needs the path of its files; {how_to_get(kind)}")


@dataclass
class ImageSet:
    """A labelled image data set: uint8 images [N, C, H, W] and int64 labels, train and test."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]
    source: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> ImageSet:
        """The first n_train training and n_test test images (all when None)."""
        return ImageSet(
            self.name,
            self.train_x[:n_train],
            self.train_y[:n_train],
            self.test_x[:n_test],
            self.test_y[:n_test],
            self.classes,
            self.source,
        )


class _NumpyOnly(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of numpy arrays) and refuses any other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def _unpickle(raw: bytes, where: str) -> dict[str, Any]:
    try:
        obj = _NumpyOnly(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:
        raise ConfigError(f"{where}: not a CIFAR-10 pickle ({err.__class__.__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: not a CIFAR-10 pickle (expected a dict)")
    return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _cifar_batch(raw: bytes, where: str) -> tuple[Tensor, Tensor]:
    d = _unpickle(raw, where)
    if "data" not in d or "labels" not in d:
        raise ConfigError(f"{where}: CIFAR-10 batch without 'data' and 'labels'")
    data = np.asarray(d["data"])
    labels = np.asarray(d["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ConfigError(f"{where}: 'data' must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}")
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise ConfigError(f"{where}: 'labels' must be {data.shape[0]} integers in 0..9")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def _cifar_source(root: Path) -> tuple[str, Path]:
    """('folder', path) or ('tar', path) for a user-given CIFAR-10 location."""
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz", ".tar")):
        return "tar", root
    if root.is_dir():
        for cand in (root, root / CIFAR_FOLDER):
            if cand.is_dir() and any((cand / f).exists() for f in CIFAR_FILES):
                return "folder", cand
        if (root / CIFAR_ARCHIVE).is_file():
            return "tar", root / CIFAR_ARCHIVE
        raise ConfigError(
            f"{root}: no CIFAR-10 data here (expected {', '.join(CIFAR_FILES)}, a '{CIFAR_FOLDER}' folder or "
            f"{CIFAR_ARCHIVE}); {how_to_get('cifar10')}"
        )
    raise ConfigError(f"{root}: CIFAR-10 data not found; {how_to_get('cifar10')}")


def _cifar_files(kind: str, path: Path) -> dict[str, bytes]:
    if kind == "folder":
        missing = [f for f in CIFAR_FILES if not (path / f).is_file()]
        if missing:
            raise ConfigError(f"{path}: CIFAR-10 folder is missing {', '.join(missing)}; {how_to_get('cifar10')}")
        return {f: (path / f).read_bytes() for f in CIFAR_FILES}
    try:
        with tarfile.open(path) as tar:
            found: dict[str, bytes] = {}
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in CIFAR_FILES:
                    f = tar.extractfile(member)
                    if f is not None:
                        found[name] = f.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ConfigError(f"{path}: unreadable archive ({err.__class__.__name__}); {how_to_get('cifar10')}") from None
    missing = [f for f in CIFAR_FILES if f not in found]
    if missing:
        raise ConfigError(f"{path}: archive is missing {', '.join(missing)}; {how_to_get('cifar10')}")
    return found


def load_cifar10(root: str | Path) -> ImageSet:
    """CIFAR-10 from a 'cifar-10-batches-py' folder, its .tar.gz, or a folder holding either."""
    kind, path = _cifar_source(Path(root))
    raw = _cifar_files(kind, path)
    parts = [_cifar_batch(raw[f], f"{path}:{f}" if kind == "tar" else str(path / f)) for f in CIFAR_TRAIN]
    test_x, test_y = _cifar_batch(
        raw["test_batch"], f"{path}:test_batch" if kind == "tar" else str(path / "test_batch")
    )
    meta = _unpickle(raw["batches.meta"], str(path / "batches.meta"))
    names = meta.get("label_names", [str(i) for i in range(10)])
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return ImageSet(
        "cifar10",
        torch.cat([p[0] for p in parts]),
        torch.cat([p[1] for p in parts]),
        test_x,
        test_y,
        classes,
        str(path),
    )


def _read_idx(path: Path, dims: int) -> np.ndarray:
    """An idx file (uint8 data, big-endian int32 sizes) with `dims` dimensions."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: unreadable ({err.strerror or err.__class__.__name__})") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise ConfigError(f"{path}: truncated gzip file (it ends before its end-of-stream marker)") from None
        except (OSError, zlib.error) as err:
            raise ConfigError(f"{path}: not a valid gzip file ({err.__class__.__name__}: {err})") from None
    if len(raw) < 4 + 4 * dims or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != dims:
        raise ConfigError(f"{path}: not an idx file of uint8 with {dims} dimension(s) (bad magic number)")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">i4", count=dims, offset=4))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ConfigError(f"{path}: header says {list(shape)} but holds {body.size} bytes of data")
    return body.reshape(shape)


def _load_idx_set(root: Path, name: str, classes: list[str]) -> ImageSet:
    """An image set in the MNIST layout: its four idx files (optionally .gz) in `root`, `root/MNIST/raw` or
    `root/raw`, uint8 images of any size (one channel) with labels 0..9."""
    folder = next(
        (
            c
            for c in (root, root / "MNIST" / "raw", root / "raw")
            if c.is_dir() and any((c / f).exists() or (c / f"{f}.gz").exists() for f in MNIST_FILES)
        ),
        None,
    )
    if folder is None:
        raise ConfigError(f"{root}: no {name} files here (expected {', '.join(MNIST_FILES)}); {how_to_get(name)}")
    paths = []
    for f in MNIST_FILES:
        p = folder / f if (folder / f).is_file() else folder / f"{f}.gz"
        if not p.is_file():
            raise ConfigError(f"{folder}: {name} folder is missing {f}; {how_to_get(name)}")
        paths.append(p)
    arrays = [_read_idx(p, 3 if "images" in p.name else 1) for p in paths]
    for img, lab, p in ((arrays[0], arrays[1], paths[1]), (arrays[2], arrays[3], paths[3])):
        if img.shape[0] != lab.shape[0]:
            raise ConfigError(f"{p}: {lab.shape[0]} labels for {img.shape[0]} images")
        if lab.size and lab.max() > 9:
            raise ConfigError(f"{p}: labels must lie in 0..9")
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise ConfigError(
            f"{paths[2]}: test images {list(arrays[2].shape[1:])} differ from the training images "
            f"{list(arrays[0].shape[1:])}"
        )
    x = [torch.from_numpy(a.copy())[:, None] for a in (arrays[0], arrays[2])]
    y = [torch.from_numpy(a.astype(np.int64)) for a in (arrays[1], arrays[3])]
    return ImageSet(name, x[0], y[0], x[1], y[1], classes, str(folder))


def load_mnist(root: str | Path) -> ImageSet:
    """MNIST from its four standard idx files (optionally .gz) in `root` or `root/MNIST/raw`."""
    return _load_idx_set(Path(root), "mnist", [str(i) for i in range(10)])


def load_fashion_mnist(root: str | Path) -> ImageSet:
    """Fashion-MNIST (28x28 grey images of 10 kinds of clothing) from its four idx files, as MNIST's."""
    return _load_idx_set(Path(root), "fashion_mnist", FASHION_CLASSES)


def load_images(kind: str, root: str | Path | None) -> ImageSet:
    """The data set of `data.kind` (cifar10, mnist or fashion_mnist) from `data.root` (or its package's folder)."""
    if kind not in READERS:
        raise ConfigError(f"data.kind: {kind!r} is not an image data set (one of {', '.join(READERS)})")
    return READERS[kind](resolve_root(kind, root))


# the image data kinds (data.kind) and their readers: adding a format is a reader and a line here
READERS: dict[str, Callable[[str | Path], ImageSet]] = {
    "cifar10": load_cifar10,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
}


# The released code's input normalization of MLPs on images (docs/model.md 4.6), per channel: MNIST-like sets map
# [0, 1] to [-1, 1]; CIFAR-10 uses the usual published per-channel mean and std.
STANDARD_NORMALIZATION: dict[str, tuple[list[float], list[float]]] = {
    "mnist": ([0.5], [0.5]),
    "fashion_mnist": ([0.5], [0.5]),
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]),
}
CIFAR_SHAPE = (3, 32, 32)  # every CIFAR-10 batch is checked to hold these (uint8 [N, 3072])


def image_shape(kind: str, root: str | Path | None) -> tuple[int, int, int]:
    """(C, H, W) of the images of `kind` without reading them all (an idx header; CIFAR-10's fixed shape once its
    files are found); ConfigError naming the path when the data set is not there."""
    if kind not in READERS:
        raise ConfigError(f"data.kind: {kind!r} is not an image data set (one of {', '.join(READERS)})")
    path = resolve_root(kind, root)
    if kind == "cifar10":
        _cifar_source(path)
        return CIFAR_SHAPE
    folder = next(
        (c for c in (path, path / "MNIST" / "raw", path / "raw") if c.is_dir()),
        None,
    )
    name = MNIST_FILES[0]
    f = None if folder is None else next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
    if f is None:
        raise ConfigError(f"{path}: no {kind} files here (expected {', '.join(MNIST_FILES)}); {how_to_get(kind)}")
    try:
        with gzip.open(f) if f.suffix == ".gz" else open(f, "rb") as fh:
            head = fh.read(16)
    except EOFError:
        raise ConfigError(f"{f}: truncated gzip file (it ends before its end-of-stream marker)") from None
    except (OSError, zlib.error) as err:
        raise ConfigError(f"{f}: not a readable idx file ({err.__class__.__name__}: {err})") from None
    if len(head) < 16 or head[:4] != bytes([0, 0, 0x08, 3]):
        raise ConfigError(f"{f}: not an idx file of uint8 with 3 dimension(s) (bad magic number)")
    h, w = (int(v) for v in np.frombuffer(head, dtype=">i4", count=2, offset=8))
    return 1, h, w


def channel_stats(x: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images [N, C, H, W] scaled to [0, 1] (float64 sums)."""
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    sq = torch.zeros(c, dtype=torch.float64)
    for i in range(0, x.shape[0], 4096):  # chunks keep the float64 copy small
        b = x[i : i + 4096].double().div_(255.0)
        s += b.sum(dim=(0, 2, 3))
        sq += b.square().sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    std = (sq / n - mean.square()).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def normalize(x: Tensor, mean: list[float], std: list[float], dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 images [..., C, H, W] -> (x/255 - mean_c) / std_c as `dtype`; float images (Gaussian images, already
    standardized) are only cast."""
    if x.is_floating_point():
        return x.to(dtype)
    m = torch.tensor(mean, dtype=dtype, device=x.device)[:, None, None]
    s = torch.tensor(std, dtype=dtype, device=x.device)[:, None, None]
    return (x.to(dtype) / 255.0 - m) / s


def augment(x: Tensor, g: torch.Generator, pad: int = 4, flip: bool = True) -> Tensor:
    """Random crop of each image from its zero-padded copy (offsets 0..2*pad) and random horizontal flip.

    x: images [B, C, H, W] (any dtype; uint8 pads with black like torchvision's RandomCrop).
    The offsets and flips are drawn from `g` on the CPU: 2 + 1 numbers per image.
    """
    b, c, h, w = x.shape
    if pad > 0:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        off = torch.randint(0, 2 * pad + 1, (2, b), generator=g).to(x.device)
        rows = (off[0][:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [B, 1, H, 1]
        cols = (off[1][:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # [B, 1, 1, W]
        x = padded[
            torch.arange(b, device=x.device)[:, None, None, None],
            torch.arange(c, device=x.device)[None, :, None, None],
            rows,
            cols,
        ]
    if flip:
        f = (torch.rand(b, generator=g, dtype=torch.float32) < 0.5).to(x.device)[
            :, None, None, None
        ]  # float32 whatever the default dtype
        x = torch.where(f, x.flip(-1), x)
    return x


def epoch_order(g: torch.Generator, n: int, steps: int, batch: int) -> Tensor:
    """Indices [steps, batch] of one epoch: consecutive shuffled passes over n items, cut into batches.

    With steps = ceil(n / batch) the last batch of a pass is completed from the next pass, so
    every batch has the same size (all seeds of an ensemble step together).
    """
    need = steps * batch
    parts = [torch.randperm(n, generator=g) for _ in range(-(-need // n))]
    return torch.cat(parts)[:need].view(steps, batch)
