"""Random conv teachers (teacher.net: conv, teacher.recipe: deep, no checkpoint) on Gaussian and real images.

Oracles: an nn.Conv2d / nn.Linear stack holding the teacher's numbers, run on inputs made here (Gaussian images
from the generator's numbers, idx images read with numpy and normalized by the constants written out); the recipe's
numbers written out: every filter and head row a unit-norm multiple of a vector of {-1, -0.75, ..., 1}, distinct
within its layer; each channel active half the time over images and positions; outputs mean 0, std 1 on the
evaluation set. Objective: train.loss = mse (the conv default: mean over outputs and the batch).
"""

import gzip

import numpy as np
import pytest
import torch

from image_files import write_mnist
from studentspec import ConfigError, pipelines
from studentspec.cli import main
from studentspec.conv.teacher import save_checkpoint

SPEC_GRID = np.array([-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0])
RANDOM = ["teacher.net=conv", "teacher.recipe=deep", "teacher.tune=true", "teacher.widths=[4,3]", "train.dtype=float64",
          "data.n_train=40", "data.n_eval=50", "train.epochs=1", "train.steps_per_epoch=null", "train.batch_size=10",
          "seeds=[1,2]", "student.multi=2", "data.std=1.5", "output_dim=7"]


def _on_grid_up_to_scale(v: np.ndarray) -> bool:
    """v = g / |g| for some non-zero g with entries in SPEC_GRID (the largest |g_i| is one of 0.25, ..., 1)."""
    top = np.abs(v).max()
    for gmax in (0.25, 0.5, 0.75, 1.0):
        g = v * gmax / top
        if np.all(np.abs(g[:, None] - SPEC_GRID[None]).min(1) < 1e-9):
            return True
    return False


def _oracle(s):
    """nn.Conv2d + ReLU layers and an nn.Linear head holding the setup's one-member teacher."""
    layers = []
    for w, b in zip(s.teacher.weights, s.teacher.biases):
        conv = torch.nn.Conv2d(w.shape[2], w.shape[1], 3, dtype=torch.float64)  # stride 1, no padding
        conv.weight.data, conv.bias.data = w[0].clone(), b[0].clone()
        layers += [conv, torch.nn.ReLU()]
    head = torch.nn.Linear(s.teacher.head_w.shape[1], s.teacher.head_w.shape[2], dtype=torch.float64)
    head.weight.data, head.bias.data = s.teacher.head_w[0].T.clone(), s.teacher.head_b[0].clone()
    return layers, head


def _check_recipe(s, x_eval: torch.Tensor) -> None:
    layers, head = _oracle(s)
    for conv in layers[::2]:
        rows = conv.weight.detach().reshape(conv.weight.shape[0], -1).numpy()
        assert np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-12)
        assert all(_on_grid_up_to_scale(r) for r in rows)
        assert len({tuple(np.round(r, 12)) for r in rows}) == len(rows)  # distinct filters
    hw = head.weight.detach().numpy()  # rows of the head
    h = x_eval
    with torch.no_grad():
        for conv, relu in zip(layers[::2], layers[1::2]):
            z = conv(h)
            # 0 is a median of every channel's pre-activations over images AND positions (ties: real images repeat
            # patches): at most half below it, at least half at or below it; so each channel is active about half the time
            n = z.shape[0] * z.shape[2] * z.shape[3]
            below, at_or_below = ((z < -1e-12).double().mean(dim=(0, 2, 3)), (z <= 1e-12).double().mean(dim=(0, 2, 3)))
            assert bool((below <= 0.5 + 1 / n).all() and (at_or_below >= 0.5 - 1 / n).all()), (below, at_or_below)
            assert bool(((z > 0).double().mean(dim=(0, 2, 3)) - 0.5).abs().max() < 0.01)
            h = relu(z)
        y = head(h.flatten(1)).numpy()
    # the head was standardized after drawing: its rows are unit-norm grid vectors times 1/std of their output
    scaled = hw / np.linalg.norm(hw, axis=1, keepdims=True)
    assert all(_on_grid_up_to_scale(r) for r in scaled) and len({tuple(np.round(r, 12)) for r in scaled}) == len(scaled)
    assert np.allclose(y.mean(0), 0, atol=1e-10) and np.allclose(y.std(0, ddof=1), 1, atol=1e-10)
    # the pipeline's teacher is this net
    out, _ = s.teacher.forward(x_eval[:, None])
    assert np.allclose(out[0].numpy(), y, rtol=1e-10, atol=1e-10)


def test_random_conv_teacher_on_gaussian_images():
    cfg = pipelines.load_config(None, [*RANDOM, "data.kind=gaussian"])
    assert pipelines.name_of(cfg) == "conv"
    s = pipelines.build(cfg)
    assert s.data.train_x.shape == (40, 1, 16, 16) and s.data.test_x.shape == (50, 1, 16, 16)
    x = torch.cat([s.data.train_x, s.data.test_x])
    assert abs(float(x.std()) - 1.5) < 0.05 and abs(float(x.mean())) < 0.05  # std data.std, 1x16x16
    _check_recipe(s, s.data.test_x)
    assert s.student.widths == [8, 6] and s.student.n_seeds == 2  # multi x channels
    assert not s.augment  # Gaussian images are not cropped or flipped
    # Gaussian images have no labels: the teacher's argmax stands in
    layers, head = _oracle(s)
    with torch.no_grad():
        assert torch.equal(torch.nn.Sequential(*layers, torch.nn.Flatten(), head)(s.data.test_x).argmax(1), s.data.test_y)
    # output_dim left out: 100, the released code's for Gaussian images
    assert pipelines.load_config(None, [*RANDOM[:-1], "data.kind=gaussian"]).output_dim == 100


def test_random_conv_teacher_on_idx_images(tmp_path):
    root = write_mnist(tmp_path, n_train=40, n_test=50, gz=True)
    cfg = pipelines.load_config(None, [*RANDOM[:-1], "data.kind=fashion_mnist", f"data.root={root}"])
    assert cfg.output_dim == 10
    s = pipelines.build(cfg)
    raw = gzip.decompress((root / "t10k-images-idx3-ubyte.gz").read_bytes())
    imgs = np.frombuffer(raw, np.uint8, offset=16).reshape(50, 1, 28, 28).astype(np.float64)
    x = torch.from_numpy((imgs / 255.0 - 0.5) / 0.5)
    _check_recipe(s, x)
    assert s.augment  # a real image set: conv students are augmented by default


def test_a_random_conv_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "configs/images_conv_quick.yaml", *RANDOM, "data.kind=gaussian", "--out", str(out), "--quiet"]) == 0
    import json
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pipeline"] == "conv" and summary["teacher"]["checkpoint"] is None
    assert all(0 <= summary["per_seed"]["1"][f"rho_mean_{l}"] <= 1 for l in (1, 2))


def test_random_conv_teacher_refusals():
    with pytest.raises(ConfigError, match=r"^teacher.checkpoint: data.kind=gaussian needs a trained conv teacher"):
        pipelines.build(pipelines.load_config(None, ["teacher.net=conv", "data.kind=gaussian"]))
    with pytest.raises(ConfigError, match=r"^teacher.net: conv runs on an image data set"):
        pipelines.load_config(None, ["teacher.net=conv", "data.kind=uniform"])
    with pytest.raises(ConfigError, match=r"^teacher.no_bias: not supported for a random conv teacher"):
        pipelines.build(pipelines.load_config(None, [*RANDOM, "data.kind=gaussian", "teacher.no_bias=true",
                                                     "teacher.tune=false"]))


@pytest.mark.parametrize("where", ["before", "after"])
def test_random_conv_teacher_with_batchnorm_is_nn_batchnorm2d_on_eval_statistics(where):
    """BatchNorm as a fixed affine map: nn.BatchNorm2d in eval mode whose running mean and (unbiased) variance are the
    per-channel statistics, over evaluation images and positions, of what it normalizes, computed here."""
    s = pipelines.build(pipelines.load_config(None, [*RANDOM, "data.kind=gaussian", f"teacher.batchnorm={where}",
                                                     "teacher.batchnorm_affine=true"]))
    assert s.student.batchnorm == where and len(s.student.norms) == 2
    layers, head = _oracle(s)
    h = s.data.test_x
    with torch.no_grad():
        for conv in layers[::2]:
            z = conv(h)
            if where == "before":
                h = torch.relu(_bn_eval(z))
            else:
                h = _bn_eval(torch.relu(z))
        y = head(h.flatten(1))
        out, _ = s.teacher.forward(s.data.test_x[:, None])
    assert np.allclose(out[0].numpy(), y.numpy(), rtol=1e-9, atol=1e-9)
    assert np.allclose(y.mean(0).numpy(), 0, atol=1e-10) and np.allclose(y.std(0).numpy(), 1, atol=1e-10)


def _bn_eval(v):
    bn = torch.nn.BatchNorm2d(v.shape[1], dtype=torch.float64).eval()  # weight 1, bias 0: a fresh affine BatchNorm
    bn.running_mean.copy_(v.mean(dim=(0, 2, 3)))
    bn.running_var.copy_(v.transpose(0, 1).reshape(v.shape[1], -1).var(dim=1))
    return bn(v)


def test_an_image_set_of_the_wrong_shape_for_a_checkpoint_exits_2(tmp_path, capsys):
    root = write_mnist(tmp_path / "m", n_train=20, n_test=20)
    s = pipelines.build(pipelines.load_config(None, [*RANDOM[:-1], "data.kind=mnist", f"data.root={root}"]))
    ckpt = save_checkpoint(s.ckpt, tmp_path / "T.pt")
    small = tmp_path / "small"
    small.mkdir()
    for name, n in (("train", 8), ("t10k", 4)):  # idx files of 20x20 images
        (small / f"{name}-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + b"".join(v.to_bytes(4, "big") for v in (n, 20, 20)) + bytes(n * 400))
        (small / f"{name}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(n))
    out = tmp_path / "run"
    rc = main(["run", "configs/images_conv_quick.yaml", "data.kind=mnist", f"data.root={small}", f"teacher.checkpoint={ckpt}",
               "teacher.recipe=deep", "teacher.widths=[4,3]", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and str(ckpt) in err and "[1, 20, 20]" in err and "data.root" in err
    assert not out.exists()


def test_a_random_conv_run_resumes_bitwise(tmp_path, monkeypatch):
    """The random teacher and Gaussian images are drawn again at build, from the same generators."""
    from test_image_mlp import resumed_equals_uninterrupted

    cfg = pipelines.load_config(None, [*RANDOM, "data.kind=gaussian", "train.epochs=3", "train.checkpoint_every=1",
                                       "train.optimizer=adam", "train.lr=0.001"])
    resumed_equals_uninterrupted(cfg, tmp_path, monkeypatch, 1)
