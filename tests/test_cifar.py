"""`experiments.cifar10.run`: the whole 4.4 pipeline on synthetic CIFAR files (resumable), and its exit-2 path without data."""

import json

import pytest

from image_files import write_cifar
from studentspec import ConfigError
from studentspec.paper.experiments.cifar10 import config_path, run
from studentspec.config import load_config

TINY = """seeds: [1, 2]
teacher: {widths: [4, 4, 4, 4], batchnorm: after, batchnorm_affine: true}
student: {init_std: null}
data: {kind: cifar10, root: nowhere, n_train: 40, n_eval: 20}
teacher_train: {epochs: 1, batch_size: 25, finetune_epochs: 1, prune_ratios: [0.3, 0.5, 0.5, 0.7]}
train: {lr: 0.005, momentum: 0.9, batch_size: 20, steps_per_epoch: null, epochs: 2, dtype: float32, threads: 1}
eval: {batch_size: 10}
sweep: {grid: {student.multi: [1, 2]}}
"""


def test_presets_are_valid_configs():
    for scale in ("quick", "paper"):
        cfg = load_config(config_path(scale))
        assert cfg.data.kind == "cifar10" and cfg.teacher.batchnorm == "after" and cfg.teacher_train.prune_ratios == [0.3, 0.5, 0.5, 0.7]
    assert load_config(config_path("paper")).teacher.widths == [64] * 4


def test_paper_preset_is_section_4_4():
    """docs/model.md 4.4 typed here: 4 layers of 3x3 convs, 64 channels, no padding (32 -> 24), ReLU then BatchNorm, then
    Linear(64*24*24 -> 10); teacher SGD momentum 0.9, weight decay 5e-4, batch 128, crop + flip augmentation;
    pruning ratios [0.3, 0.5, 0.5, 0.7] (64 -> 45, 32, 32, 20); students multi 1, 2, 5 trained with MSE."""
    import torch

    from studentspec.conv.nets import init_conv_net, n_pruned
    from studentspec.paper.experiments.cifar10 import _multis

    cfg = load_config(config_path("paper"))
    assert cfg.teacher.widths == [64, 64, 64, 64] and cfg.teacher.activation == "relu" and cfg.teacher.batchnorm == "after"
    tt = cfg.teacher_train
    assert (tt.momentum, tt.weight_decay, tt.batch_size) == (0.9, 5e-4, 128) and cfg.data.augment
    assert tt.prune_ratios == [0.3, 0.5, 0.5, 0.7] and [64 - n_pruned(r, 64) for r in tt.prune_ratios] == [45, 32, 32, 20]
    assert _multis(config_path("paper"), "paper") == [1.0, 2.0, 5.0] and cfg.train.loss == "mse"
    net = init_conv_net([torch.Generator().manual_seed(0)], 3, 32, cfg.teacher.widths, n_classes=10, batchnorm="after", affine=True)
    assert [tuple(w.shape) for w in net.weights] == [(1, 64, 3, 3, 3)] + [(1, 64, 64, 3, 3)] * 3
    assert tuple(net.head_w.shape) == (1, 64 * 24 * 24, 10)
    out, hidden = net.forward(torch.zeros(2, 1, 3, 32, 32, dtype=torch.float64))
    assert [tuple(h.shape) for h in hidden] == [(2, 1, 64, 30, 30), (2, 1, 64, 28, 28), (2, 1, 64, 26, 26), (2, 1, 64, 24, 24)]
    assert tuple(out.shape) == (1, 2, 10)
    with pytest.raises(ConfigError, match="^scale"):
        config_path("huge")


def test_reproduce_without_data_says_how_to_get_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        run(tmp_path / "out", "quick", [f"data.root={tmp_path / 'absent'}"], progress=False)
    msg = str(err.value)
    assert "absent" in msg and "cifar-10-python.tar.gz" in msg and "data.root=PATH" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()


def test_reproduce_end_to_end_and_resume(tmp_path):
    write_cifar(tmp_path / "data", per_batch=12, n_test=20)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    info = run(out, overrides=[f"data.root={tmp_path / 'data'}"], config=cfg, progress=False)
    assert sorted(info["per_multi"]) == ["1", "2"] and info["pruned"]["active_widths"] == [3, 2, 2, 2]
    assert all(len(v["rho_mean"]) == 4 for v in info["per_multi"].values())
    for name in ("teacher.pt", "teacher_pruned.pt", "runs/multi_1/scalars.parquet", "runs/multi_2/summary.json",
                 "figures/layer_corr.png", "figures/channel_corr.pdf", "reproduce.json"):
        assert (out / name).is_file(), name
    # a second call reuses every stage and gives the same numbers
    again = run(out, overrides=[f"data.root={tmp_path / 'data'}"], config=cfg, progress=False)
    assert again["per_multi"] == info["per_multi"]
    assert json.loads((out / "reproduce.json").read_text())["per_multi"] == info["per_multi"]
