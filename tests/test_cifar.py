"""`cifar.reproduce`: the whole 4.4 pipeline on synthetic CIFAR files (resumable), and its exit-2 path without data."""

import json

import pytest

from image_files import write_cifar
from studentspec import ConfigError
from studentspec.paper.cifar import config_path, reproduce
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
    with pytest.raises(ConfigError, match="^scale"):
        config_path("huge")


def test_reproduce_without_data_says_how_to_get_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        reproduce(tmp_path / "out", "quick", [f"data.root={tmp_path / 'absent'}"], progress=False)
    msg = str(err.value)
    assert "absent" in msg and "cifar-10-python.tar.gz" in msg and "data.root=PATH" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()


def test_reproduce_end_to_end_and_resume(tmp_path):
    write_cifar(tmp_path / "data", per_batch=12, n_test=20)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    info = reproduce(out, overrides=[f"data.root={tmp_path / 'data'}"], config=cfg, progress=False)
    assert sorted(info["per_multi"]) == ["1", "2"] and info["pruned"]["active_widths"] == [3, 2, 2, 2]
    assert all(len(v["rho_mean"]) == 4 for v in info["per_multi"].values())
    for name in ("teacher.pt", "teacher_pruned.pt", "runs/multi_1/scalars.parquet", "runs/multi_2/summary.json",
                 "figures/layer_corr.png", "figures/channel_corr.pdf", "reproduce.json"):
        assert (out / name).is_file(), name
    # a second call reuses every stage and gives the same numbers
    again = reproduce(out, overrides=[f"data.root={tmp_path / 'data'}"], config=cfg, progress=False)
    assert again["per_multi"] == info["per_multi"]
    assert json.loads((out / "reproduce.json").read_text())["per_multi"] == info["per_multi"]
