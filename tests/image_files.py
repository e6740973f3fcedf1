"""Tiny image data sets written in the real CIFAR-10 (pickled batches) and MNIST (idx) file formats."""

from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np


def class_images(rng: np.random.Generator, labels: np.ndarray, channels: int, side: int) -> np.ndarray:
    """uint8 images [N, C, side, side] whose class shows as a brightness pattern, plus noise (learnable)."""
    n = len(labels)
    yy, xx = np.mgrid[0:side, 0:side]
    base = np.stack([np.sin((k + 1) * xx / side * np.pi) * np.cos((k % 3 + 1) * yy / side * np.pi) for k in range(10)])
    img = 128 + 80 * base[labels][:, None] + rng.normal(0, 30, (n, channels, side, side))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_cifar(root: Path, per_batch: int = 20, n_test: int = 40, seed: int = 0, tar: bool = False) -> Path:
    """A 'cifar-10-batches-py' folder (or its .tar.gz) under root, in the original pickle format."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {f"data_batch_{i}": per_batch for i in range(1, 6)} | {"test_batch": n_test}
    for name, n in sizes.items():
        labels = rng.integers(0, 10, n)
        data = class_images(rng, labels, 3, 32).reshape(n, 3072)
        batch = {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": data,
                 b"filenames": [f"img{i}.png".encode() for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")],
            b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    if not tar:
        return folder
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(folder, arcname="cifar-10-batches-py")
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    return archive


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, n_train: int = 60, n_test: int = 30, seed: int = 0, gz: bool = False) -> Path:
    """The four MNIST idx files (28x28 uint8 images, labels 0..9) in root."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = class_images(rng, labels, 1, 28)[:, 0]
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            raw = _idx(arr)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (root / name).write_bytes(raw)
    return root
