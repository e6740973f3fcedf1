"""The torch path on a CUDA device (skipped without one; benchmarks/gpu_check.sh runs these on a lent GPU).

Objective: the paper's half_sse (the config default) unless a case says otherwise.
"""

import numpy as np
import pytest
import torch

from studentspec import load_config, pipelines
from studentspec.mlp.record import tables

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

TINY = ["input_dim=12", "output_dim=6", "teacher.widths=[5,4]", "student.multi=2", "data.n_train=300", "data.n_eval=200",
        "train.steps_per_epoch=40", "train.epochs=3", "train.lr=0.05", "train.kernel=torch", "train.dtype=float64"]


def run(device: str, seeds: list[int], *extra: str):
    return pipelines.train(load_config(None, [*TINY, f"seeds={seeds}", f"train.device={device}", *extra]), progress=False)


@pytest.mark.parametrize("extra", [[], ["train.optimizer=adam", "train.lr=0.01"], ["data.kind=online"],
                                   ["teacher.batchnorm=before", "train.momentum=0.9"], ["train.loss=ce", "teacher.activation=leaky_relu"]])
def test_cuda_equals_cpu_in_float64(extra):
    """The same run on the GPU and on the CPU: every stored number to 1e-10 (different GEMM rounding, same math)."""
    a, b = run("cpu", [1, 2, 3], *extra), run("cuda", [1, 2, 3], *extra)
    for ta, tb in zip(tables(a), tables(b)):
        assert len(ta) > 0 and list(ta.columns) == list(tb.columns)
        num = ta.select_dtypes("number").columns
        np.testing.assert_allclose(ta[num].to_numpy(float), tb[num].to_numpy(float), rtol=1e-10, atol=1e-10)
    for pa, pb in zip(a.setup.student.parameters(), b.setup.student.parameters()):
        np.testing.assert_allclose(pa.detach().cpu().numpy(), pb.detach().cpu().numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_seed_alone_equals_seed_inside_the_ensemble_on_the_device(dtype):
    alone, ensemble = run("cuda", [7], f"train.dtype={dtype}"), run("cuda", [3, 7, 11, 12], f"train.dtype={dtype}")
    i = ensemble.setup.cfg.seeds.index(7)
    pa, pe = alone.setup.student.parameters(), ensemble.setup.student.parameters()
    assert len(pa) == len(pe) >= 6
    for a, e in zip(pa, pe):
        assert torch.equal(a[0], e[i])


def test_a_diverging_seed_is_frozen_on_the_device_and_its_siblings_go_on():
    r = run("cuda", [1, 2, 3, 4], "train.lr=40")
    assert r.diverged, "lr 40 should make some seed diverge"
    alive = [s for s in [1, 2, 3, 4] if s not in r.diverged]
    for s in alive:  # a sibling's numbers are those it has alone
        alone = run("cuda", [s], "train.lr=40")
        i = r.setup.cfg.seeds.index(s)
        for a, e in zip(alone.setup.student.parameters(), r.setup.student.parameters()):
            assert torch.equal(a[0], e[i])
