"""converge: from a briefly trained student to an SGD critical point, then claims 2 and 3 (docs/model.md 3)."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from studentspec import ConfigError, StoreError, build, load_config, load_run, write_run
from studentspec import train
from studentspec.theory.converge import ConvergeOptions, converge, converge_run
from studentspec.mlp.nets import Net

# d=10, 4 teacher nodes, 5 outputs, no fan-out decay; a short SGD run gets every teacher
# node within ~1 degree of some student, then converge finishes the job in float64. The objective
# is half_sse (the paper's J); lr 0.02 = 0.05 x 2/C is the step an MSE run at lr 0.05 takes.
SMALL = ["input_dim=10", "output_dim=5", "teacher.widths=[4]", "teacher.decay=0", "data.n_eval=200",
         "eval.every=1000", "eval.grad_norm=false", "train.loss=half_sse", "train.lr=0.02"]
FILES = ("converge.json", "converge_teachers.parquet", "converge_students.parquet", "converge_hessian.parquet")


def trained(seeds, extra):
    cfg = load_config(None, [f"seeds={seeds}", *SMALL, *extra])
    return cfg, train(cfg, progress=False).setup


def check_specialized(res, n_teachers=4):
    teachers, students = res.to_frames()
    assert res.per_seed  # the checks below run per seed
    for s in res.per_seed:
        assert s.reached and s.stop == "tol" and s.grad_max < 1e-10, s
        assert s.loss < 1e-20
        assert s.conclusions == {"conclusion_2": True, "conclusion_3": True}, s
    assert len(teachers) == n_teachers * len(res.per_seed)
    assert teachers.specialized.all() and teachers.checked.all()
    assert (teachers.angle_deg < 1e-3).all()  # not just within angle_tol: the angle goes to ~0
    loose = students[~students.aligned & ~students.dead & ~students.constant]
    for seed, st in students.groupby("seed"):
        thr = next(s.fanout_threshold for s in res.per_seed if s.seed == seed)
        assert (loose[loose.seed == seed].fanout_norm < thr).all()
        assert (st[st.aligned].angle_deg < 1e-3).all()
    return teachers, students


@pytest.mark.parametrize("method", ["newton", "lbfgs"])
def test_relu_multi2_gaussian_data_reaches_critical_point_and_specializes(method):
    """8 students for 4 teachers, 500 Gaussian samples: max per-sample gradient < 1e-10, claims 2 and 3 hold."""
    cfg, s = trained([1, 2], ["student.multi=2", "data.n_train=500", "train.epochs=5"])
    before = [t.clone() for t in s.student.parameters()]
    res = converge(cfg, s.student, s.teacher, s.stream.x_train, options=ConvergeOptions(method=method))
    assert all(torch.equal(a, b) for a, b in zip(before, s.student.parameters()))  # input untouched
    assert [p.seed for p in res.per_seed] == [1, 2]
    assert all(p.grad_start > 1e-2 for p in res.per_seed)
    _, students = check_specialized(res)
    # seed 2 ends with a constant node (fan-in weight ~0, positive bias): an extra output bias whose
    # fan-out is not small; it is reported and left out of conclusion 3
    const = students[students.constant]
    assert len(const) == 1 and const.seed.item() == 2 and const.active_frac.item() == 1.0
    assert const.fanout_norm.item() > 0.1 and const.fanin_norm.item() < 1e-8
    assert res.per_seed[1].n_constant == 1
    if method == "newton":
        assert all(p.iterations < 40 for p in res.per_seed)


def test_relu_multi5_teacher_aware_data_every_student_specializes():
    """20 students, boundary data (docs/model.md 4.2, exact): every student ends aligned with a teacher."""
    cfg, s = trained([1], ["student.multi=5", "data.kind=teacher_aware", "data.boundary_exact=true",
                           "data.n_train=1000", "train.epochs=10"])
    res = converge(cfg, s.student, s.teacher, s.stream.x_train, options=ConvergeOptions(method="newton"))
    _, students = check_specialized(res)
    assert len(students) == 20 and students.aligned.all()


def test_leaky_relu_multi5_reaches_critical_point_and_specializes():
    cfg, s = trained([1], ["student.multi=5", "teacher.activation=leaky_relu", "data.kind=teacher_aware",
                           "data.boundary_exact=true", "data.n_train=600", "train.epochs=10"])
    res = converge(cfg, s.student, s.teacher, s.stream.x_train, options=ConvergeOptions(method="newton"))
    check_specialized(res)
    assert res.student.activation == "leaky_relu"


def test_untrained_student_is_not_critical_and_not_specialized():
    cfg = load_config(None, ["seeds=[3]", *SMALL, "student.multi=2", "data.n_train=200"])
    s = build(cfg)
    res = converge(cfg, s.student, s.teacher, s.stream.x_train, options=ConvergeOptions(max_iter=0))
    p = res.per_seed[0]
    assert p.iterations == 0 and not p.reached and p.stop == "max_iter" and not res.reached
    assert p.grad_max == p.grad_start > 1e-3
    assert p.conclusions["conclusion_2"] is False
    teachers, _ = res.to_frames()
    assert len(teachers) == 4 and not teachers.specialized.any() and (teachers.angle_deg > 1.0).all()
    json.dumps(res.to_json())


def exact_student(teacher: Net, loose_fanout: float = 0.0) -> Net:
    """An exact fit of a one-seed two-layer teacher with 8 nodes: teacher 0 split over nodes 0 and 4
    (scales 2 and 0.5), teachers 1-3 copied, node 5 unaligned (fan-out `loose_fanout`), node 6 dead
    (bias -1000), node 7 constant (w = 0, b = 1; its output is taken out of the output bias)."""
    g = torch.Generator().manual_seed(0)
    W, b, V, c = teacher.weights[0][0], teacher.biases[0][0], teacher.weights[1][0], teacher.biases[1][0]
    d, C = W.shape[0], V.shape[1]
    W1, b1, V1 = torch.zeros(d, 8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64), torch.zeros(8, C, dtype=torch.float64)
    for k, (j, lam, share) in enumerate([(0, 2.0, 0.6), (1, 1.0, 1.0), (2, 1.0, 1.0), (3, 1.0, 1.0), (0, 0.5, 0.4)]):
        W1[:, k], b1[k], V1[k] = lam * W[:, j], lam * b[j], share * V[j] / lam
    W1[:, 5], b1[5] = torch.randn(d, generator=g, dtype=torch.float64), 0.3
    V1[5] = loose_fanout * torch.ones(C, dtype=torch.float64) / C**0.5
    W1[:, 6], b1[6], V1[6] = torch.randn(d, generator=g, dtype=torch.float64), -1000.0, 1.0
    b1[7], V1[7] = 1.0, 0.7
    return Net([W1[None], V1[None]], [b1[None], (c - V1[7])[None]], teacher.activation, teacher.slope)


def test_constructed_critical_point_tables_dead_and_constant_students():
    cfg = load_config(None, ["seeds=[5]", *SMALL, "student.multi=2", "data.n_train=300"])
    s = build(cfg)
    res = converge(cfg, exact_student(s.teacher), s.teacher, s.stream.x_train, options=ConvergeOptions(max_iter=0, method="newton"))
    p = res.per_seed[0]
    assert p.reached and p.iterations == 0 and p.grad_max < 1e-12
    assert p.conclusions == {"conclusion_2": True, "conclusion_3": True}
    assert (p.n_aligned, p.n_dead, p.n_constant, p.n_unaligned_checked) == (5, 1, 1, 1)
    teachers, students = res.to_frames()
    assert list(teachers.columns[:5]) == ["seed", "teacher", "best_student", "angle_deg", "specialized"]
    assert list(students.columns[:7]) == ["seed", "student", "best_teacher", "angle_deg", "aligned", "dead", "constant"]
    assert teachers.best_student.tolist()[1:] == [1, 2, 3] and teachers.best_student[0] in (0, 4)
    assert teachers.n_within_tol.tolist() == [2, 1, 1, 1] and (teachers.angle_deg < 1e-4).all()
    assert students.best_teacher.tolist()[:5] == [0, 1, 2, 3, 0] and students.aligned.tolist() == [True] * 5 + [False] * 3
    assert students.dead.tolist() == [False] * 6 + [True, False] and students.constant.tolist() == [False] * 7 + [True]
    assert students.fanout_norm[5] == 0.0 and students.fanout_norm[6] == pytest.approx(5**0.5)
    # the same point with fan-out on the unaligned node: not critical, conclusion 3 fails
    res = converge(cfg, exact_student(s.teacher, loose_fanout=0.5), s.teacher, s.stream.x_train,
                   options=ConvergeOptions(max_iter=0))
    p = res.per_seed[0]
    assert not p.reached and p.conclusions == {"conclusion_2": True, "conclusion_3": False}
    assert p.max_unaligned_fanout == pytest.approx(0.5)


def test_bad_arguments_raise_one_line_errors():
    cfg = load_config(None, ["seeds=[1]", *SMALL, "student.multi=2", "data.n_train=50"])
    s = build(cfg)
    for kwargs, msg in [({"tol": 0.0}, "tol"), ({"tol": -1e-3}, "tol"), ({"method": "sgd"}, "method"),
                        ({"max_iter": -1}, "max_iter"), ({"angle_tol": 0}, "angle_tol")]:
        with pytest.raises(ConfigError, match=msg) as err:
            converge(cfg, s.student, s.teacher, s.stream.x_train, options=ConvergeOptions(**kwargs))
        assert "\n" not in str(err.value)
    big = load_config(None, ["seeds=[1]", *SMALL, "teacher.widths=[40]", "student.multi=10", "data.n_train=10", "data.n_eval=10"])
    sb = build(big)
    with pytest.raises(ConfigError, match="too many for a dense Hessian"):
        converge(big, sb.student, sb.teacher, sb.stream.x_train, options=ConvergeOptions(method="newton"))
    bn = load_config(None, ["seeds=[1]", *SMALL, "student.multi=2", "data.n_train=50", "teacher.batchnorm=before"])
    sb = build(bn)
    with pytest.raises(ConfigError, match="converge supports nets without BatchNorm"):
        converge(bn, sb.student, sb.teacher, sb.stream.x_train)


def tiny_run(tmp_path, name, extra):
    cfg = load_config(None, ["seeds=[1,2]", *SMALL, "student.multi=2", "data.n_train=300", *extra])
    return write_run(train(cfg, progress=False), tmp_path / name)


def test_converge_run_writes_four_files_atomically_and_they_load_back(tmp_path, monkeypatch):
    run = tiny_run(tmp_path, "run", ["train.epochs=5", "data.kind=teacher_aware", "data.boundary_exact=true"])
    # a failure while writing leaves nothing behind, not even temporaries
    real = pd.DataFrame.to_parquet
    calls = []

    def flaky(self, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(self, path, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", flaky)
    with pytest.raises(OSError):
        converge_run(run, ConvergeOptions(method="newton"))
    monkeypatch.undo()
    assert not any((n.startswith(".") and n != ".studentspec") or n.startswith("converge") for n in os.listdir(run))  # the marker only

    res = converge_run(run, ConvergeOptions(method="newton"))
    assert all((run / f).is_file() for f in FILES)
    assert not any(n.startswith(".") and n != ".studentspec" for n in os.listdir(run))  # no temporaries left
    info = json.loads((run / "converge.json").read_text())
    assert info["method"] == "newton" and info["tol"] == 1e-10 and info["seeds"] == [1, 2]
    assert info["n_train"] == 300
    assert set(info["per_seed"]) == {"1", "2"}
    for p in res.per_seed:
        entry = info["per_seed"][str(p.seed)]
        assert entry["reached"] == p.reached and entry["grad_max"] == p.grad_max and entry["iterations"] == p.iterations
        assert entry["conclusions"] == p.conclusions
    teachers, students = res.to_frames()
    pd.testing.assert_frame_equal(pd.read_parquet(run / "converge_teachers.parquet"), teachers)
    pd.testing.assert_frame_equal(pd.read_parquet(run / "converge_students.parquet"), students)
    # the Hessian at each end point: all 133 eigenvalues (exact below hessian_exact_max), summarized per seed
    spectrum = pd.read_parquet(run / "converge_hessian.parquet")
    pd.testing.assert_frame_equal(spectrum, res.hessian_frame())
    assert list(spectrum.columns) == ["seed", "index", "eigenvalue", "method"] and (spectrum.method == "exact").all()
    assert len(spectrum) == 2 * 133 and spectrum.groupby("seed")["index"].apply(list).tolist() == [list(range(133))] * 2
    for p in res.per_seed:
        lam = spectrum[spectrum.seed == p.seed].eigenvalue.to_numpy()
        h = info["per_seed"][str(p.seed)]["hessian"]
        assert h["n_params"] == 133 and h["method"] == "exact" and (h["min_eigenvalue"], h["max_eigenvalue"]) == (lam.min(), lam.max())
        tol = 1e-6 * abs(lam).max()
        assert h["n_near_zero"] == (abs(lam) <= tol).sum() and h["n_negative"] == (lam < -tol).sum() == 0
        assert h["n_near_zero"] >= 8  # at a critical point: at least one rescaling direction per hidden node
    assert info["hessian"]["exact_max"] == 3000 and info["hessian"]["tol_rel"] == 1e-6
    assert res.reached and info["all_conclusions_hold"]
    # the stored student was the starting point: same end point as converge() on a rebuilt setup
    stored = load_run(run)
    w = stored.weights()
    cfg = stored.config
    s = build(cfg)
    start = Net([torch.as_tensor(w["student.W1"]), torch.as_tensor(w["student.W2"])],
                [torch.as_tensor(w["student.b1"]), torch.as_tensor(w["student.b2"])])
    again = converge(cfg, start, s.teacher, s.stream.x_train, options=ConvergeOptions(method="newton"))
    assert [p.grad_max for p in again.per_seed] == [p.grad_max for p in res.per_seed]


def test_converge_run_rejects_bad_runs(tmp_path):
    with pytest.raises(StoreError, match="not found"):
        converge_run(tmp_path / "missing")
    bn = tiny_run(tmp_path, "bn", ["train.epochs=0", "teacher.batchnorm=before"])
    with pytest.raises(ConfigError, match="converge supports nets without BatchNorm"):
        converge_run(bn)
    online = tiny_run(tmp_path, "online", ["train.epochs=0", "data.kind=online", "train.steps_per_epoch=1"])
    with pytest.raises(ConfigError, match="fixed training set"):
        converge_run(online)
    ok = tiny_run(tmp_path, "ok", ["train.epochs=0"])
    with pytest.raises(ConfigError, match="tol"):
        converge_run(ok, ConvergeOptions(tol=0))
    w = dict(np.load(ok / "weights.npz"))
    w["teacher.W1"] = w["teacher.W1"] + 1.0
    np.savez(ok / "weights.npz", **w)
    with pytest.raises(StoreError, match="teacher.W1 differs"):
        converge_run(ok)
    del w["student.b2"]
    np.savez(ok / "weights.npz", **w)
    with pytest.raises(StoreError, match="student.b2"):
        converge_run(ok)
    assert not any(n.startswith("converge") for n in os.listdir(ok))


def test_finite_data_critical_point_can_leave_a_near_aligned_student_with_fan_out():
    """Seed 3 of the multi=2 setting: converge reaches an exact critical point (per-sample gradient
    < 1e-10) where students sit 0.4-1.4 degrees from teacher 1 with the same gate pattern on all 500
    training samples (no sample falls between their boundaries): the data cannot tell them apart,
    so conclusion 3 fails at angle_tol=1 and holds once the tolerance covers them."""
    cfg, s = trained([3], ["student.multi=2", "data.n_train=500", "train.epochs=5"])
    res = converge(cfg, s.student, s.teacher, s.stream.x_train, options=ConvergeOptions(method="newton"))
    p = res.per_seed[0]
    assert p.reached and p.grad_max < 1e-10
    assert p.conclusions == {"conclusion_2": True, "conclusion_3": False}
    _, students = res.to_frames()
    loose = students[~students.aligned & ~students.dead & ~students.constant]
    assert len(loose) >= 1 and (loose.angle_deg < 3).all() and loose.fanout_norm.max() > 0.1
    x = s.stream.x_train[0]
    zt = x @ s.teacher.weights[0][0] + s.teacher.biases[0][0]
    zs = x @ res.student.weights[0][0] + res.student.biases[0][0]
    for k, j in zip(loose.student, loose.best_teacher):
        assert torch.equal(zs[:, k] > 0, zt[:, j] > 0)
    # re-checking the converged point with a wider tolerance (max_iter=0 keeps it as it is)
    wide = converge(cfg, res.student, s.teacher, s.stream.x_train, options=ConvergeOptions(max_iter=0, angle_tol=3.0))
    assert wide.per_seed[0].reached and wide.per_seed[0].conclusions == {"conclusion_2": True, "conclusion_3": True}


def test_deep_net_runs_and_leaves_conclusion_3_unclaimed():
    cfg = load_config(None, ["seeds=[1]", *SMALL, "teacher.widths=[3,2]", "student.multi=2", "data.n_train=100"])
    s = build(cfg)
    res = converge(cfg, s.student, s.teacher, s.stream.x_train, options=ConvergeOptions(max_iter=3, method="newton"))
    p = res.per_seed[0]
    assert p.conclusions["conclusion_3"] is None and p.iterations <= 3 and p.loss <= p.loss_start
    assert res.to_json()["depth"] == 3 and len(res.to_frames()[1]) == 6
