"""The up-front memory estimate counts the tensors build() really allocates; a config that cannot fit exits 2 before any work."""

from pathlib import Path

import pytest

from studentspec.mlp import memory
from studentspec.config import ConfigError, load_config
from studentspec.mlp.train import build

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "two_layer_quick.yaml")
SMALL = ["seeds=[1,2,3]", "input_dim=7", "output_dim=4", "teacher.widths=[3]", "student.multi=2", "data.n_train=50", "data.n_eval=30"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_estimate_counts_the_tensors_build_allocates(dtype):
    cfg = load_config(CONFIG, [*SMALL, f"train.dtype={dtype}"])
    s = build(cfg)
    parts = memory.estimate(cfg)
    x64 = 3 * 80 * 7 * 8  # inputs are drawn in float64 (S x (n_train + n_eval) x d)
    assert parts["inputs"] == (x64 if dtype == "float64" else x64 + s.stream.x_train.nbytes + s.x_eval.nbytes)
    assert s.stream.x_train.nbytes + s.x_eval.nbytes == (x64 if dtype == "float64" else x64 // 2)
    assert parts["labels"] == s.stream.y_train.nbytes + s.y_eval.nbytes
    assert parts["parameters"] == 4 * sum(p.nbytes for p in s.student.parameters())


def test_a_config_that_cannot_fit_is_refused_with_its_estimate():
    cfg = load_config(CONFIG, ["data.n_train=100000000"])  # 8 seeds x 1e8 rows x 100 inputs: ~600 GiB of inputs alone
    with pytest.raises(ConfigError, match=r"needs at least 89\d\.\d GiB \(inputs 596\.\d, labels 298\.\d GiB\) for 8 seeds"):
        memory.check_fits(cfg, available=64 * 2**30)
    memory.check_fits(load_config(CONFIG, []), available=2**30)  # the quick preset's floor is ~0.2 GiB


def test_cli_refuses_before_work_and_writes_nothing(tmp_path, capsys):
    from studentspec.cli import main

    out = tmp_path / "run"
    assert main(["run", CONFIG, "seeds=[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]", "data.n_train=1000000000", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "GiB" in err and "cpu has" in err, err
    assert list(tmp_path.iterdir()) == []
