"""MLP teachers and students on flattened images (data.kind an image set with teacher.net: mlp) and gaussian_like.

Oracles: the images read back with numpy from the idx bytes and normalized by the released code's constants written
out here; the teacher's outputs from a per-seed nn.Linear stack; the Gaussian-like inputs' covariance from numpy.cov
of the images; the compiled kernel against the torch path; a sweep of two points against single runs' files.
Objective: train.loss = half_sse (the default: the paper's J = 1/2 sum over outputs, mean over the batch) everywhere.
"""

import gzip
import json

import numpy as np
import pytest
import torch

from image_files import write_cifar, write_mnist
from studentspec import ConfigError, pipelines
from studentspec.cli import main
from studentspec.images import DEFAULT_ROOTS, STANDARD_NORMALIZATION
from studentspec.mlp.data.images import moments
from studentspec.sweep.grid import SweepOptions, load_sweep, run_sweep

from conftest import needs_kernel
from test_checkpoint import Crash, crash_after

SMALL = ["teacher.net=mlp", "teacher.recipe=deep", "teacher.tune=true", "teacher.widths=[6,5]", "student.multi=2",
         "data.n_train=50", "data.n_eval=30", "train.epochs=2", "train.batch_size=8", "seeds=[1,2]"]


def _idx_images(path):
    """uint8 images [N, H, W] of an idx file, read here with numpy (not the package's reader)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    n, h, w = (int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(3))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, h, w)


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("fm"), n_train=60, n_test=40, gz=True)


def test_the_normalization_constants_are_the_released_codes():
    # MNIST and Fashion-MNIST: transforms.Normalize((0.5,), (0.5,)) after ToTensor; CIFAR-10: the usual published ones
    assert STANDARD_NORMALIZATION["mnist"] == STANDARD_NORMALIZATION["fashion_mnist"] == ([0.5], [0.5])
    assert STANDARD_NORMALIZATION["cifar10"] == ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])


def test_mlp_teacher_on_images_is_an_nn_linear_stack_of_the_normalized_images(fmnist):
    cfg = pipelines.load_config(None, [*SMALL, f"data.root={fmnist}", "data.kind=fashion_mnist"])
    assert cfg.input_dim == 784 and cfg.output_dim == 10  # from the images, and the released code's d_output
    s = pipelines.build(cfg)
    imgs = {split: _idx_images(fmnist / f"{p}-images-idx3-ubyte.gz") for split, p in (("train", "train"), ("eval", "t10k"))}
    ref = {k: (v.reshape(len(v), -1).astype(np.float64) / 255.0 - 0.5) / 0.5 for k, v in imgs.items()}
    for i in range(2):  # every seed sees the same images: the first n_train / n_eval
        assert np.allclose(s.x_eval[i].numpy(), ref["eval"][:30], rtol=0, atol=1e-15)
        assert np.allclose(s.stream.x_train[i].numpy(), ref["train"][:50], rtol=0, atol=1e-15)
    for i in range(2):
        layers = []
        for l, (w, b) in enumerate(zip(s.teacher.weights, s.teacher.biases)):
            lin = torch.nn.Linear(w.shape[1], w.shape[2], dtype=torch.float64)
            lin.weight.data, lin.bias.data = w[i].T.clone(), b[i].clone()
            layers += [lin] + ([torch.nn.ReLU()] if l < len(s.teacher.weights) - 1 else [])
        net = torch.nn.Sequential(*layers)
        with torch.no_grad():
            y = net(torch.from_numpy(ref["eval"][:30])).numpy()
            h1 = torch.relu(layers[0](torch.from_numpy(ref["eval"][:30]))).numpy()
        assert np.allclose(s.y_eval[i].numpy(), y, rtol=1e-10, atol=1e-10)
        # the deep recipe tuned on the evaluation images: outputs standardized, hidden nodes active about half the time
        assert np.allclose(y.mean(0), 0, atol=1e-10) and np.allclose(y.std(0, ddof=1), 1, atol=1e-10)
        assert np.all(np.abs((h1 > 0).mean(0) - 0.5) <= 1 / 30 + 1e-12)


def test_input_dim_given_and_wrong_exits_2_naming_it(fmnist, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^input_dim: 100 does not match the fashion_mnist images \(1x28x28 = 784"):
        pipelines.load_config(None, [*SMALL, f"data.root={fmnist}", "data.kind=fashion_mnist", "input_dim=100"])
    assert pipelines.load_config(None, [*SMALL, f"data.root={fmnist}", "data.kind=fashion_mnist", "input_dim=784",
                                        "output_dim=3"]).output_dim == 3
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"input_dim: 50\ndata: {{kind: fashion_mnist, root: {fmnist}}}\nteacher: {{net: mlp}}\n")
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "input_dim: 50 does not match" in err and "\n" not in err and not out.exists()


def test_an_image_set_too_small_for_n_train_names_the_key(fmnist):
    cfg = pipelines.load_config(None, [*SMALL, f"data.root={fmnist}", "data.kind=fashion_mnist", "data.n_train=61"])
    with pytest.raises(ConfigError, match=r"^data.n_train: 61, but fashion_mnist has 60 training images"):
        pipelines.build(cfg)


def test_cifar_images_flatten_channel_major_with_per_channel_constants(tmp_path):
    folder = write_cifar(tmp_path, per_batch=6, n_test=10)
    cfg = pipelines.load_config(None, [*SMALL, f"data.root={folder}", "data.kind=cifar10", "data.n_train=20",
                                       "data.n_eval=10"])
    assert cfg.input_dim == 3072
    s = pipelines.build(cfg)
    import pickle
    raw = pickle.loads((folder / "test_batch").read_bytes(), encoding="bytes")[b"data"].astype(np.float64)  # [N, 3072]
    mean = np.repeat([0.4914, 0.4822, 0.4465], 1024)
    std = np.repeat([0.2023, 0.1994, 0.2010], 1024)
    assert np.allclose(s.x_eval[0].numpy(), (raw / 255.0 - mean) / std, rtol=0, atol=1e-12)


def test_augmentation_is_off_for_mlps_by_default_and_per_seed_when_on(fmnist):
    base = [*SMALL, f"data.root={fmnist}", "data.kind=fashion_mnist"]
    off = pipelines.build(pipelines.load_config(None, base))
    on = pipelines.build(pipelines.load_config(None, [*base, "data.augment=true"]))
    assert torch.equal(off.stream.x_train[0], off.stream.x_train[1])
    assert not torch.equal(on.stream.x_train[0], on.stream.x_train[1])  # each seed its own crops and flips
    assert torch.equal(on.x_eval, off.x_eval)  # the evaluation images are never augmented


@needs_kernel
def test_the_compiled_kernel_and_the_torch_path_agree_on_images(fmnist):
    base = [*SMALL, f"data.root={fmnist}", "data.kind=fashion_mnist", "train.dtype=float64", "eval.every=1",
            "train.steps_per_epoch=30"]
    runs = {k: pipelines.train(pipelines.load_config(None, [*base, f"train.kernel={k}"]), progress=False) for k in ("c", "torch")}
    assert runs["c"].kernel == "c" and runs["torch"].kernel == "torch"
    for wc, wt in zip(runs["c"].setup.student.weights, runs["torch"].setup.student.weights):
        assert torch.allclose(wc, wt, rtol=1e-9, atol=1e-12)
    rc, rt = (pipelines.record(r) for r in runs.values())
    for name in ("scalars", "teachers"):
        a, b = rc.tables[name], rt.tables[name]
        num = [c for c in a.columns if a[c].dtype.kind == "f"]
        assert np.allclose(a[num].to_numpy(), b[num].to_numpy(), rtol=1e-8, atol=1e-10, equal_nan=True)


def test_a_sweep_of_two_points_with_theory_on_image_inputs(fmnist, tmp_path):
    items = [*SMALL, f"data.root={fmnist}", "data.kind=fashion_mnist", "student.multi=1,2", "theory.enabled=true",
             "theory.samples=20"]
    res = run_sweep(None, items, tmp_path / "sw", SweepOptions(workers=1, progress=False, pack=None))
    assert not res["failed"] and len(res["jobs"]) == 2
    single = pipelines.train(pipelines.load_config(None, [*items[:-3], "data.kind=fashion_mnist", "student.multi=2",
                                                          "theory.enabled=true", "theory.samples=20"]), progress=False)
    ref = pipelines.record(single).tables["scalars"]
    sc = load_sweep(tmp_path / "sw")["scalars"]
    assert set(sc["student.multi"]) == {1, 2}
    mine = sc[sc["student.multi"] == 2]
    assert len(mine) == len(ref) and mine["mse"].tolist() == ref["mse"].tolist()  # the multi-2 job is the single run
    assert np.isfinite(sc["mse"]).all()


def test_packed_image_jobs_are_bitwise_the_unpacked_ones(fmnist, tmp_path):
    items = [*SMALL, f"data.root={fmnist}", "data.kind=fashion_mnist", "student.init_scale=1,1.5", "teacher.decay=0,1"]
    packed = run_sweep(None, items, tmp_path / "p", SweepOptions(workers=1, progress=False, pack=None))  # auto
    plain = run_sweep(None, items, tmp_path / "u", SweepOptions(workers=1, progress=False))
    assert not packed["failed"] and not plain["failed"] and len(packed["done"]) == 4
    a, b = (load_sweep(tmp_path / d)["scalars"].sort_values(["job", "seed", "step", "split"]) for d in ("p", "u"))
    assert a["mse"].tolist() == b["mse"].tolist() and a["rho_mean_1"].tolist() == b["rho_mean_1"].tolist()
    assert any("packed_with" in json.loads(p.read_text()) for p in (tmp_path / "p").rglob("summary.json"))


def test_gaussian_like_has_the_images_mean_and_covariance(fmnist):
    cfg = pipelines.load_config(None, [*SMALL, f"data.root={fmnist}", "data.kind=gaussian_like", "data.like=fashion_mnist",
                                       "data.n_train=60", "seeds=[3]"])
    assert cfg.input_dim == 784 and cfg.output_dim == 10
    imgs = _idx_images(fmnist / "train-images-idx3-ubyte.gz").reshape(60, -1).astype(np.float64)
    x = (imgs / 255.0 - 0.5) / 0.5
    mean, factor = moments("fashion_mnist", str(fmnist), 60)
    cov = np.cov(x, rowvar=False)
    assert np.allclose(mean.numpy(), x.mean(0), atol=1e-12)
    assert np.allclose((factor @ factor.T).numpy(), cov, atol=1e-10)  # the factor reproduces numpy.cov exactly
    from studentspec.mlp.data.images import gaussian_like
    n = 20000
    draw = gaussian_like(torch.Generator().manual_seed(0), n, cfg).numpy()
    # sampling error of a covariance entry: sqrt((s_ii s_jj + s_ij^2) / n); 6 of those bound every entry
    sd = np.sqrt(np.diag(cov))
    bound = 6 * np.sqrt((np.outer(sd, sd) ** 2 + cov ** 2) / n) + 1e-12
    assert np.all(np.abs(np.cov(draw, rowvar=False) - cov) <= bound)
    assert np.all(np.abs(draw.mean(0) - x.mean(0)) <= 6 * sd / np.sqrt(n) + 1e-12)
    s = pipelines.build(cfg)  # seeds draw from their own generators: training and evaluation sets differ
    assert s.x_eval.shape == (1, 30, 784) and not torch.equal(s.x_eval[0, :30], s.stream.x_train[0, :30])


def test_gaussian_like_needs_an_image_set():
    with pytest.raises(ConfigError, match=r"^data.like: gaussian_like needs an image set"):
        pipelines.load_config(None, ["data.kind=gaussian_like"])


@pytest.mark.skipif(not DEFAULT_ROOTS["fashion_mnist"].is_dir(),
                    reason=f"{DEFAULT_ROOTS['fashion_mnist']} missing: apt-get install dataset-fashion-mnist")
def test_an_mlp_on_the_real_fashion_mnist_images():
    cfg = pipelines.load_config(None, [*SMALL, "data.kind=fashion_mnist", "data.n_train=500", "data.n_eval=300"])
    res = pipelines.train(cfg, progress=False)
    rho = pipelines.record(res).summary["per_seed"]["1"]["rho_mean_1"]
    assert 0 < rho <= 1


def resumed_equals_uninterrupted(cfg, tmp_path, monkeypatch, crash_epoch: int) -> None:
    """Train `cfg` whole; train it again crashing after the checkpoint of `crash_epoch`, resume it: the same tables,
    weights and per-seed summary (a helper the random conv teacher's test shares)."""
    from studentspec import load_run

    whole = load_run(pipelines.write_run(pipelines.train(cfg, progress=False), tmp_path / "whole"))
    crash_after(monkeypatch, crash_epoch)
    with pytest.raises(Crash):
        pipelines.train(cfg, progress=False, out=tmp_path / "run")
    monkeypatch.undo()
    result = pipelines.train(cfg, progress=False, out=tmp_path / "run", resume=True)
    assert result.resumed_from == crash_epoch
    again = load_run(pipelines.write_run(result, tmp_path / "run"))
    for name in ("scalars", "teachers", "students"):
        assert len(getattr(whole, name)) > 0 and getattr(whole, name).equals(getattr(again, name)), name
    wa, wb = whole.weights(), again.weights()
    assert set(wa) == set(wb) and all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_an_augmented_image_mlp_resumes_bitwise(fmnist, tmp_path, monkeypatch):
    """data.augment + data.regenerate: each epoch's crops come from the data generators, which the checkpoint keeps."""
    cfg = pipelines.load_config(None, [*SMALL, f"data.root={fmnist}", "data.kind=fashion_mnist", "data.augment=true",
                                       "data.regenerate=true", "train.epochs=4", "train.checkpoint_every=1"])
    resumed_equals_uninterrupted(cfg, tmp_path, monkeypatch, 2)
