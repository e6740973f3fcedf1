"""Image data sets from their real file formats, bad-input errors, batched augmentation vs a per-image loop."""

import pickle

import numpy as np
import pytest
import torch

from image_files import write_cifar, write_mnist
from studentspec import ConfigError, load_config
from studentspec.cli import main
from studentspec import images
from studentspec.images import augment, channel_stats, epoch_order, load_cifar10, load_images, load_mnist, normalize


def test_cifar_folder_matches_the_pickles(tmp_path):
    folder = write_cifar(tmp_path, per_batch=7, n_test=5)
    data = load_cifar10(folder)
    assert data.train_x.shape == (35, 3, 32, 32) and data.train_x.dtype == torch.uint8 and data.test_x.shape == (5, 3, 32, 32)
    raw = pickle.loads((folder / "data_batch_2").read_bytes(), encoding="bytes")
    # CIFAR's rows are 1024 red, 1024 green, 1024 blue values, each row-major 32x32
    assert np.array_equal(data.train_x[7:14].numpy().reshape(7, 3072), raw[b"data"])
    assert data.train_y[7:14].tolist() == raw[b"labels"]
    assert data.classes[0] == "airplane" and data.classes[9] == "truck"
    # the parent folder, and the archive (as a file or found in a folder) give the same set
    assert torch.equal(load_cifar10(tmp_path).train_x, data.train_x)
    arch = write_cifar(tmp_path / "t", per_batch=7, n_test=5, tar=True)
    for root in (arch, arch.parent):
        other = load_cifar10(root)
        assert torch.equal(other.train_x, data.train_x) and torch.equal(other.test_y, data.test_y)


@pytest.mark.parametrize("damage,expect", [
    ("missing", "missing data_batch_3"),
    ("garbage", "not a CIFAR-10 pickle"),
    ("shape", "uint8 [N, 3072]"),
    ("labels", "labels"),
    ("evil", "not allowed"),
])
def test_malformed_cifar_names_the_file(tmp_path, damage, expect):
    folder = write_cifar(tmp_path, per_batch=4, n_test=4)
    f = folder / "data_batch_3"
    if damage == "missing":
        f.unlink()
    elif damage == "garbage":
        f.write_bytes(b"not a pickle at all")
    elif damage == "shape":
        f.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    elif damage == "labels":
        f.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 12]}))
    else:
        f.write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")
    with pytest.raises(ConfigError) as err:
        load_cifar10(folder)
    msg = str(err.value)
    assert str(folder) in msg and expect in msg and "\n" not in msg


def test_absent_data_says_how_to_get_it(tmp_path):
    for root in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(ConfigError, match="cifar-10-python.tar.gz"):
            load_cifar10(root)
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    write_mnist(tmp_path, n_train=12, n_test=6, gz=gz)
    data = load_images("mnist", tmp_path)
    assert data.train_x.shape == (12, 1, 28, 28) and data.test_y.shape == (6,) and data.shape == (1, 28, 28)
    assert int(data.train_y.max()) <= 9


def test_mnist_bad_magic_and_size(tmp_path):
    write_mnist(tmp_path, n_train=5, n_test=3)
    f = tmp_path / "t10k-images-idx3-ubyte"
    raw = bytearray(f.read_bytes())
    f.write_bytes(bytes(raw[:-10]))
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte: header says"):
        load_mnist(tmp_path)
    raw[3] = 1
    f.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match="bad magic"):
        load_mnist(tmp_path)


def test_fashion_mnist_reads_the_mnist_layout_under_its_own_name(tmp_path):
    write_mnist(tmp_path, n_train=12, n_test=6, gz=True)
    data = load_images("fashion_mnist", tmp_path)
    mnist = load_mnist(tmp_path)
    assert data.name == "fashion_mnist" and data.shape == (1, 28, 28)
    assert torch.equal(data.train_x, mnist.train_x) and torch.equal(data.test_y, mnist.test_y)
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot" and len(data.classes) == 10


def test_fashion_mnist_root_defaults_to_the_debian_folder(tmp_path, monkeypatch):
    write_mnist(tmp_path / "pkg", n_train=8, n_test=4, gz=True)
    monkeypatch.setitem(images.DEFAULT_ROOTS, "fashion_mnist", tmp_path / "pkg")
    assert load_images("fashion_mnist", None).train_x.shape == (8, 1, 28, 28)
    load_config(None, ["data.kind=fashion_mnist", "teacher.checkpoint=T.pt"])  # no data.root needed
    monkeypatch.setitem(images.DEFAULT_ROOTS, "fashion_mnist", tmp_path / "absent")
    for call in (lambda: load_images("fashion_mnist", None),
                 lambda: load_config(None, ["data.kind=fashion_mnist", "teacher.checkpoint=T.pt"])):
        with pytest.raises(ConfigError) as err:
            call()
        msg = str(err.value)
        assert msg.startswith("data.root: data.kind=fashion_mnist") and "\n" not in msg
        assert "apt-get install dataset-fashion-mnist" in msg
    # mnist has no package folder: data.root stays required
    with pytest.raises(ConfigError, match=r"^data.root: data.kind=mnist"):
        load_images("mnist", None)


def test_truncated_and_corrupt_gz_name_the_file(tmp_path):
    write_mnist(tmp_path, n_train=20, n_test=6, gz=True)
    f = tmp_path / "train-images-idx3-ubyte.gz"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ConfigError, match=r"train-images-idx3-ubyte.gz: truncated gzip file"):
        load_images("fashion_mnist", tmp_path)
    bad = bytearray(raw)
    for i in range(20, len(bad) - 20, 7):  # scramble the deflate stream (header and trailer kept)
        bad[i] ^= 0x5A
    f.write_bytes(bytes(bad))
    with pytest.raises(ConfigError, match=r"train-images-idx3-ubyte.gz: not a valid gzip file"):
        load_images("fashion_mnist", tmp_path)
    f.write_bytes(b"\x00\x00\x08\x03 not gzip")
    with pytest.raises(ConfigError, match=r"train-images-idx3-ubyte.gz: not a valid gzip file"):
        load_images("fashion_mnist", tmp_path)


REAL_FASHION = images.DEFAULT_ROOTS["fashion_mnist"]


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason=f"{REAL_FASHION} missing: apt-get install dataset-fashion-mnist")
def test_the_real_fashion_mnist_files():
    data = load_images("fashion_mnist", None)
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    # Fashion-MNIST is balanced: 6000 training and 1000 test images of each class
    assert torch.bincount(data.train_y).tolist() == [6000] * 10
    assert torch.bincount(data.test_y).tolist() == [1000] * 10
    assert int(data.train_y[0]) == 9  # the first training image is an ankle boot (Zalando's published order)


def test_config_keys_for_image_data():
    with pytest.raises(ConfigError, match=r"^data.root: data.kind=cifar10 needs the path of its files"):
        load_config(None, ["data.kind=cifar10"])
    with pytest.raises(ConfigError, match=r"^teacher.checkpoint: a conv teacher needs image data"):
        load_config(None, ["teacher.checkpoint=T.pt"])
    cfg = load_config(None, ["data.kind=mnist", "data.root=/x", "teacher.checkpoint=T.pt"])
    assert cfg.data.root == "/x" and cfg.teacher.checkpoint == "T.pt"


def test_run_without_data_exits_2(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{kind: cifar10, root: {tmp_path / 'absent'}}}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "teacher.checkpoint" in err and "\n" not in err
    assert main(["run", str(cfg), f"teacher.checkpoint={tmp_path / 'T.pt'}", "--out", str(tmp_path / "run")]) == 2
    assert "T.pt: teacher checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_augment_matches_a_per_image_loop():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (9, 3, 8, 6), generator=g, dtype=torch.uint8)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    out = augment(x, g1, pad=2)
    off = torch.randint(0, 5, (2, 9), generator=g2)
    flip = torch.rand(9, generator=g2, dtype=torch.float32) < 0.5  # float32 uniforms, whatever the default dtype
    for i in range(9):
        p = np.pad(x[i].numpy(), ((0, 0), (2, 2), (2, 2)))
        ref = p[:, off[0, i] : off[0, i] + 8, off[1, i] : off[1, i] + 6]
        if flip[i]:
            ref = ref[:, :, ::-1]
        assert np.array_equal(out[i].numpy(), ref)
    assert 0 < int(flip.sum()) < 9  # both branches were exercised
    assert torch.equal(augment(x, g1, pad=0, flip=False), x)
    # docs/model.md 4.4: random crops (padding 4) and horizontal flips are the default
    assert torch.equal(augment(x, torch.Generator().manual_seed(7)), augment(x, torch.Generator().manual_seed(7), pad=4, flip=True))
    assert not torch.equal(augment(x, torch.Generator().manual_seed(7)), augment(x, torch.Generator().manual_seed(7), pad=3, flip=True))


def test_channel_stats_and_normalize():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50, 3, 5, 5), generator=g, dtype=torch.uint8)
    mean, std = channel_stats(x)
    ref = x.numpy().astype(np.float64) / 255
    assert np.allclose(mean, ref.mean(axis=(0, 2, 3)), atol=1e-12) and np.allclose(std, ref.std(axis=(0, 2, 3)), atol=1e-12)
    z = normalize(x, mean, std, torch.float64)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-12)


def test_epoch_order_is_shuffled_passes():
    order = epoch_order(torch.Generator().manual_seed(1), 10, 3, 4)
    flat = order.flatten().tolist()
    assert order.shape == (3, 4) and sorted(flat[:10]) == list(range(10)) and len(set(flat[10:])) == 2


def test_mnist_teacher_and_student(tmp_path):
    from studentspec import load_run

    write_mnist(tmp_path / "mnist", n_train=40, n_test=20, gz=True)
    assert main(["teacher", "train", "mnist", "teacher.widths=[3,3]", "teacher_train.batch_size=20", "train.threads=1", "--root",
                 str(tmp_path / "mnist"), "--epochs", "1", "--out", str(tmp_path / "T.pt"), "--quiet"]) == 0
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"""seeds: [3]
teacher: {{widths: [3, 3], batchnorm: after, batchnorm_affine: true, checkpoint: {tmp_path / 'T.pt'}}}
student: {{multi: 2, init_std: null}}
data: {{kind: mnist, root: {tmp_path / 'mnist'}, augment: false}}
train: {{lr: 0.01, batch_size: 20, steps_per_epoch: 2, epochs: 1, dtype: float32, threads: 1}}
""")
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    run = load_run(tmp_path / "run")
    assert run.summary["student_widths"] == [6, 6] and run.summary["n_train"] == 40 and run.scalars["step"].max() == 2


def test_augmentation_does_not_depend_on_the_default_dtype():
    """A process whose default dtype is float64 (some test modules set it) must crop and flip exactly like any other."""
    from studentspec.images import augment

    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    before = torch.get_default_dtype()
    try:
        out = {}
        for dtype in (torch.float32, torch.float64):
            torch.set_default_dtype(dtype)
            g = torch.Generator().manual_seed(5)
            out[dtype] = (augment(x, g), g.get_state())
    finally:
        torch.set_default_dtype(before)
    assert torch.equal(out[torch.float32][0], out[torch.float64][0])
    assert torch.equal(out[torch.float32][1], out[torch.float64][1])  # the generator moved on by the same amount
