"""Each claim statistic on constructed tables with a known answer: one passing and one failing case each."""

import itertools
import math
import json

import numpy as np
import pandas as pd
import pytest
import torch

from studentspec.paper import claims as C
from studentspec.theory import lemma as theory
from studentspec.mlp.nets import Net


def students(spec_fan: float, unspec_fan: float, jobs: int = 2) -> pd.DataFrame:
    """Per job: 4 specialized students (corr 0.99) and 6 unspecialized ones (corr 0.1..0.6), at steps 0 and 100."""
    rows = []
    for job, step, k in itertools.product(range(jobs), (0, 100), range(10)):
        spec = k < 4
        rows.append({"job": f"j{job}", "seed": 1, "step": step, "split": "train", "layer": 1, "student": k,
                     "best_corr": 0.99 if spec else 0.1 + 0.1 * (k - 4),
                     "fanout_norm": (spec_fan if spec else unspec_fan) if step == 100 else 1.0})  # step 0 is a cloud: ignored
    return pd.DataFrame(rows)


def teachers(success, decays=(1.0, 2.0), multis=(1.0, 2.0, 5.0), m=5, seeds=4, steps=(0, 5, 10)) -> pd.DataFrame:
    """success(p, multi, j, seed, step) -> bool; fan-out norm 1/(j+1)^p; one job per (p, multi)."""
    rows = []
    for p, multi in itertools.product(decays, multis):
        for seed, step, j in itertools.product(range(seeds), steps, range(m)):
            rows.append({"job": f"p{p}-m{multi}", "teacher.decay": p, "student.multi": multi, "seed": seed, "step": step, "split": "eval",
                         "layer": 1, "teacher": j, "fanout_norm": 1 / (j + 1) ** max(p, 0.5), "specialized": bool(success(p, multi, j, seed, step)),
                         "best_corr": 0.99 if success(p, multi, j, seed, step) else 0.5})
    return pd.DataFrame(rows)


def test_claim_record_nan_fails_and_is_json_null():
    c = C.claim("x", "s", float("nan"), "> 0", passed=True, justification="j")
    assert c["value"] is None and c["passed"] is False
    json.dumps(c)


def test_final_takes_each_jobs_last_step():
    df = pd.DataFrame({"job": ["a", "a", "b", "b"], "step": [0, 10, 0, 20], "split": "eval", "v": [1, 2, 3, 4]})
    assert C.final(df, "eval")["v"].tolist() == [2, 4]


def test_lshape_pass_and_fail():
    ok = C.lshape(students(1.0, 0.01))
    assert ok["passed"] and ok["value"] == pytest.approx(0.01)
    bad = C.lshape(students(1.0, 0.8))
    assert not bad["passed"] and bad["value"] == pytest.approx(0.8)


def test_lshape_nothing_specialized_fails():
    df = students(1.0, 0.01)
    df["best_corr"] = 0.3
    assert not C.lshape(df)["passed"]


def test_success_falls_with_index_pass_and_fail():
    falls = teachers(lambda p, multi, j, seed, step: j < 5 - seed - p)  # weak (high j) fails more, more so for large p
    ok = C.success_falls_with_index(falls)
    assert ok["passed"] and ok["value"] <= -0.9
    rises = teachers(lambda p, multi, j, seed, step: j > seed)
    assert not C.success_falls_with_index(rises)["passed"]
    flat = teachers(lambda p, multi, j, seed, step: True)  # all learned: no trend to measure
    assert C.success_falls_with_index(flat)["value"] is None and not C.success_falls_with_index(flat)["passed"]


def test_success_rises_with_multi_pass_and_fail():
    ok = C.success_rises_with_multi(teachers(lambda p, multi, j, seed, step: j < multi))
    assert ok["passed"] and ok["value"] == pytest.approx(1.0)
    bad = C.success_rises_with_multi(teachers(lambda p, multi, j, seed, step: j < 6 - multi))
    assert not bad["passed"] and ok["value"] > bad["value"]


def test_success_falls_with_decay_pass_and_fail():
    decays = (0.0, 0.5, 1.0, 1.5, 2.0)
    ok = C.success_falls_with_decay(teachers(lambda p, multi, j, seed, step: j < 5 - 2 * p, decays=decays))
    assert ok["passed"] and ok["value"] == pytest.approx(-1.0)
    bad = C.success_falls_with_decay(teachers(lambda p, multi, j, seed, step: j < 1 + 2 * p, decays=decays))
    assert not bad["passed"] and bad["value"] > 0


def test_success_lower_early_pass_and_fail():
    ok = C.success_lower_early(teachers(lambda p, multi, j, seed, step: j < step // 2), early_step=5)
    assert ok["passed"] and ok["value"] > 0
    bad = C.success_lower_early(teachers(lambda p, multi, j, seed, step: j < 3), early_step=5)
    assert not bad["passed"] and bad["value"] == 0


def test_strong_first_pass_and_fail():
    ok = C.strong_first(teachers(lambda p, multi, j, seed, step: step >= 5 * j))  # strongest (j=0) at step 0, j=1 at 5, j=2 at 10, others never
    assert ok["passed"] and ok["value"] < -0.8
    bad = C.strong_first(teachers(lambda p, multi, j, seed, step: step >= 5 * (4 - j)))  # weakest first
    assert not bad["passed"] and bad["value"] > 0.8


def scalars_multi(sign: float, early_sign: float = 0.0) -> pd.DataFrame:
    """Eval MSE 1 at step 0, 10^(early_sign log multi - 1) at step 5, 10^(sign log multi - 2) at step 10, two decay panels."""
    rows = []
    for multi, decay, seed, step in itertools.product((1.0, 2.0, 5.0, 10.0), (0.0, 1.0), range(3), (0, 5, 10)):
        mse = {0: 1.0, 5: 10.0 ** (early_sign * np.log(multi) - 1), 10: 10.0 ** (sign * np.log(multi) - 2)}[step]
        rows.append({"job": f"m{multi}p{decay}", "student.multi": multi, "teacher.decay": decay, "seed": seed, "step": step,
                     "split": "eval", "mse": mse})
    return pd.DataFrame(rows)


def test_converges_lower_with_multi_pass_and_fail():
    assert C.converges_lower_with_multi(scalars_multi(-1.0))["passed"]
    bad = C.converges_lower_with_multi(scalars_multi(+1.0))
    assert not bad["passed"] and bad["value"] == pytest.approx(1.0)
    assert "p=0: +1.00, p=1: +1.00" in bad["detail"]


def test_converges_faster_with_multi_reads_the_early_step_only():
    fast = C.converges_faster_with_multi(scalars_multi(+1.0, early_sign=-1.0), early_step=5)
    assert fast["passed"] and fast["value"] == pytest.approx(-1.0)  # the final step's opposite order does not matter
    slow = C.converges_faster_with_multi(scalars_multi(-1.0, early_sign=+1.0), early_step=5)
    assert not slow["passed"] and slow["value"] == pytest.approx(1.0)
    assert not C.converges_faster_with_multi(scalars_multi(-1.0), early_step=5)["passed"]  # no trend early: a constant series fails


def sample_teachers(ta_curve: dict[int, float], g_curve: dict[int, float], multi: float = 2.0) -> pd.DataFrame:
    rows = []
    for kind, curve in (("teacher_aware", ta_curve), ("gaussian", g_curve)):
        for n, corr in curve.items():
            for seed, step, j in itertools.product(range(2), (0, 10), range(3)):
                rows.append({"job": f"{kind}{n}-{multi}", "data.kind": kind, "data.n_train": n, "student.multi": multi, "seed": seed,
                             "step": step, "split": "eval", "layer": 1, "teacher": j, "best_corr": corr if step == 10 else 0.0})
    return pd.DataFrame(rows)


def test_teacher_aware_fewer_samples_pass_and_fail():
    ns = [30, 60, 120, 240, 480, 960]
    ta, g = dict(zip(ns, [0.90, 0.93, 0.951, 0.96, 0.97, 0.97])), dict(zip(ns, [0.3, 0.4, 0.6, 0.8, 0.85, 0.96]))
    ok = C.teacher_aware_fewer_samples(sample_teachers(ta, g))
    assert ok["passed"] and ok["value"] == pytest.approx(960 / 120)  # the first N at mean best corr >= 0.95
    never = C.teacher_aware_fewer_samples(sample_teachers(ta, dict(zip(ns, [0.3, 0.4, 0.6, 0.8, 0.85, 0.9]))))
    assert never["passed"] and never["value"] == pytest.approx(960 / 120) and "never" in never["detail"]  # censored: a lower bound
    same = dict(zip(ns, [0.3, 0.5, 0.9, 0.951, 0.96, 0.96]))
    bad = C.teacher_aware_fewer_samples(sample_teachers(same, same))
    assert not bad["passed"] and bad["value"] == pytest.approx(1.0)
    assert not C.teacher_aware_fewer_samples(sample_teachers(same, {}))["passed"]  # one kind missing
    assert not C.teacher_aware_fewer_samples(sample_teachers(ta, g, multi=1.0))["passed"]  # no over-realized student
    # median over multis: 8 (multi 2), 1 (multi 5), 16 (multi 10) -> 8; multi 1 (ratio 1/32) is left out
    early = dict(zip(ns, [0.96] * 6))
    mixed = pd.concat([sample_teachers(ta, g), sample_teachers(same, same, multi=5.0), sample_teachers(early, dict(zip(ns, [0.5] * 4 + [0.96] * 2)), multi=10.0),
                       sample_teachers(dict(zip(ns, [0.5] * 5 + [0.96])), early, multi=1.0)])
    assert C.teacher_aware_fewer_samples(mixed)["value"] == pytest.approx(8.0)


def deep_scalars(rhos: list[list[float]], mses: list[float], loss: str = "mse") -> pd.DataFrame:
    rows = []
    for i, (rho, mse) in enumerate(zip(rhos, mses)):
        for step in (0, 50):
            row = {"job": f"j{i}", "train.loss": loss, "seed": 11, "step": step, "split": "eval", "mse": mse if step == 50 else 1.0}
            row |= {f"rho_mean_{l + 1}": (r if step == 50 else 0.2) for l, r in enumerate(rho)}
            rows.append(row)
    return pd.DataFrame(rows)


def test_deep_lowest_highest_pass_and_fail():
    ok = C.deep_lowest_highest(deep_scalars([[0.9, 0.7, 0.6, 0.6], [0.99, 0.8, 0.7, 0.75], [0.9999, 0.99995, 0.9999, 0.9999]], [0.3, 0.1, 1e-4]))
    assert ok["passed"] and ok["value"] == 1.0  # the third run ties within 1e-3
    bad = C.deep_lowest_highest(deep_scalars([[0.5, 0.7, 0.6, 0.6], [0.6, 0.8, 0.7, 0.75], [0.9, 0.8, 0.7, 0.7]], [0.3, 0.1, 0.01]))
    assert not bad["passed"] and bad["value"] == pytest.approx(1 / 3)


def test_deep_lowest_to_one_pass_and_fail():
    mses = [0.5, 0.3, 0.1, 0.03, 0.01, 1e-3, 1e-4, 1e-5]
    ok = C.deep_lowest_to_one(deep_scalars([[r, 0.5] for r in (0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.999, 0.9999)], mses))
    assert ok["passed"] and ok["value"] > 0.99
    flat = C.deep_lowest_to_one(deep_scalars([[r, 0.5] for r in (0.9, 0.7, 0.8, 0.9, 0.6, 0.8, 0.7, 0.8)], mses))
    assert not flat["passed"]
    ce_only = deep_scalars([[0.99, 0.5]] * 4, [0.1, 0.01, 0.001, 1e-4], loss="ce")  # CE runs are not this claim's evidence
    assert C.deep_lowest_to_one(ce_only)["value"] is None


def table_scalars(rows: dict[int, list[list[float]]]) -> pd.DataFrame:
    """Per N, per seed: [mse, rho_1, ..., rho_L] at the end (an earlier evaluation at step 0 must be ignored)."""
    out = []
    for n, seeds in rows.items():
        for seed, (mse, *rho) in enumerate(seeds):
            for step in (0, 100):
                row = {"job": f"n{n}", "data.n_train": n, "seed": seed, "step": step, "split": "eval",
                       "mse": mse if step else 9.0}
                out.append(row | {f"rho_mean_{l + 1}": (r if step else 0.0) for l, r in enumerate(rho)})
    return pd.DataFrame(out)


def test_deep_table_is_the_seed_mean_of_the_final_evaluation():
    """The table against numpy means written out per N (two seeds, two layers)."""
    seeds = {5000: [[0.5, 0.6, 0.4], [0.3, 0.8, 0.6]], 50000: [[0.01, 0.99, 0.97], [0.03, 0.97, 0.95]]}
    table = C.deep_table(table_scalars(seeds))
    assert list(table.index) == [5000, 50000] and list(table.columns) == ["mse", "rho_mean_1", "rho_mean_2"]
    for n, rows in seeds.items():
        assert table.loc[n].to_numpy() == pytest.approx(np.mean(np.array(rows), axis=0))


def test_deep_reference_match_mean_gap_and_closest():
    ref = C.DEEP_REFERENCE
    near = ref.copy()
    near[[c for c in ref.columns if c.startswith("rho")]] -= 0.05  # every cell 0.05 below the reference
    far = ref.copy()
    far[[c for c in ref.columns if c.startswith("rho")]] = 0.5
    ok = C.deep_reference_match({"200 epochs": far, "budget 20,000,000 samples": near}, ref)
    assert ok["passed"] and ok["value"] == pytest.approx(0.05) and "closest: budget" in ok["detail"]
    gap = float(np.mean(np.abs(0.5 - ref[[c for c in ref.columns if c.startswith("rho")]].to_numpy())))
    bad = C.deep_reference_match({"budget 20,000,000 samples": far, "200 epochs": near}, ref)
    assert not bad["passed"] and bad["value"] == pytest.approx(gap) and "closest: 200 epochs" in bad["detail"]


def test_deep_upper_together_pass_and_fail():
    sizes = [5000, 20000, 50000, 100000]

    def table(*layers):
        return pd.DataFrame({f"rho_mean_{i + 1}": col for i, col in enumerate(layers)}, index=sizes)

    together = C.deep_upper_together(table([0.7, 0.96, 0.999, 1.0], [0.5, 0.6, 0.99, 1.0], [0.5, 0.5, 0.95, 1.0]))
    assert together["passed"] and together["value"] == 1.0 and "L1: 20000" in together["detail"]
    apart = C.deep_upper_together(table([0.7, 0.96, 0.999, 1.0], [0.5, 0.6, 0.99, 1.0], [0.5, 0.5, 0.6, 0.95]))
    assert not apart["passed"] and apart["value"] == 2.0
    lowest_late = C.deep_upper_together(table([0.5, 0.6, 0.7, 0.95], [0.5, 0.6, 0.99, 1.0], [0.5, 0.5, 0.95, 1.0]))
    assert not lowest_late["passed"] and lowest_late["value"] == 1.0
    dips = C.deep_upper_together(table([0.95, 0.96, 0.999, 1.0], [0.95, 0.6, 0.99, 1.0], [0.5, 0.5, 0.95, 1.0]))
    assert dips["passed"] and "L2: 50000" in dips["detail"]  # reaching 0.9 counts from where it stays above
    never = C.deep_upper_together(table([0.95] * 4, [0.5] * 4, [0.95] * 4))
    assert not never["passed"] and "L2: never" in never["detail"]


def random_pair(widths, activation, S=2, d=5, C_out=3, seed=0):
    g = torch.Generator().manual_seed(seed)

    def net(ws):
        dims = [d, *ws, C_out]
        W = [torch.randn(S, a, b, generator=g, dtype=torch.float64) for a, b in zip(dims[:-1], dims[1:])]
        b = [0.5 * torch.randn(S, n, generator=g, dtype=torch.float64) for n in dims[1:]]
        return Net(W, b, activation, 0.2)

    return net(widths), net([2 * w for w in widths])


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("widths", [[4], [3, 4, 3]])
def test_lemma_identity_passes_on_real_nets(activation, widths):
    teacher, student = random_pair(widths, activation)
    errors = C.lemma_errors(teacher, student, torch.randn(2, 16, 5, dtype=torch.float64))
    assert len(errors) == len(widths)
    assert C.lemma_identity(errors)["passed"]


def test_lemma_identity_passes_near_a_fit():
    """A student 1e-9 from the teacher: the signal is ~1e-9 of either term, so an error relative to the
    signal alone would show rounding of the terms (~1e-16 x 1e9); relative to the terms it stays at rounding."""
    teacher, _ = random_pair([4, 3], "relu")
    g = torch.Generator().manual_seed(1)
    student = Net([w + 1e-9 * torch.randn(w.shape, generator=g, dtype=w.dtype) for w in teacher.weights],
                  [b.clone() for b in teacher.biases], "relu", 0.2)
    errors = C.lemma_errors(teacher, student, torch.randn(2, 16, 5, dtype=torch.float64))
    assert max(errors) < 1e-12 and C.lemma_identity(errors)["passed"]


def test_lemma_identity_fails_on_a_wrong_formula(monkeypatch):
    teacher, student = random_pair([4, 3], "relu")
    right = theory.backprop_terms
    monkeypatch.setattr(theory, "backprop_terms", lambda sp, tp, layer: (right(sp, tp, layer)[0], torch.zeros(())))  # drops the B_l f_l term
    result = C.lemma_identity(C.lemma_errors(teacher, student, torch.randn(2, 16, 5, dtype=torch.float64)))
    assert not result["passed"] and result["value"] > 1e-3


def test_net_from_weights_round_trip():
    teacher, _ = random_pair([3, 4], "relu")
    arrays = {f"teacher.W{l + 1}": w.numpy() for l, w in enumerate(teacher.weights)} | {f"teacher.b{l + 1}": b.numpy() for l, b in enumerate(teacher.biases)}
    net = C.net_from_weights(arrays, "teacher", "relu", 0.1)
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(net.forward(x)[0], teacher.forward(x)[0])


def conv_finals(rho_by_multi, acc_by_multi, seeds=(1, 2), spread=0.01):
    """Last-evaluation rows of conv student runs: per multi and seed, rho_mean_<l> = the given value +- spread (the seeds
    straddle it, so the seed mean is the given value) and an accuracy."""
    rows = []
    for (multi, rhos), acc in zip(rho_by_multi.items(), acc_by_multi):
        for i, seed in enumerate(seeds):
            sign = 1 if i % 2 == 0 else -1
            rows.append({"student.multi": multi, "seed": seed, "step": 30, "epoch": 3, "accuracy": acc + sign * spread,
                         **{f"rho_mean_{l}": r + sign * spread for l, r in enumerate(rhos, 1)}})
    return pd.DataFrame(rows)


def test_conv_over_realization_rho_pass_and_fail():
    """docs/model.md 4.4: rho rises with multi at every layer; the statistic is min over layers of rho(5) - rho(1)."""
    ok = C.over_realization_rho(conv_finals({1.0: [0.8, 0.64, 0.63, 0.6], 2.0: [0.86, 0.74, 0.68, 0.65], 5.0: [0.9, 0.7, 0.7, 0.62]}, [0.5] * 3))
    assert ok["passed"] and ok["value"] == pytest.approx(0.02) and "L4: +0.020" in ok["detail"]  # 0.62 - 0.6
    bad = C.over_realization_rho(conv_finals({1.0: [0.8, 0.64, 0.63, 0.6], 5.0: [0.9, 0.7, 0.6, 0.7]}, [0.5] * 2))
    assert not bad["passed"] and bad["value"] == pytest.approx(-0.03)  # layer 3 lost 0.03
    assert C.over_realization_rho(conv_finals({1.0: [0.8, 0.6]}, [0.5]))["value"] is None  # one multi: no statistic


def test_conv_over_realization_accuracy_pass_and_fail():
    rhos = {1.0: [0.8, 0.6], 2.0: [0.8, 0.6], 5.0: [0.8, 0.6]}
    ok = C.over_realization_accuracy(conv_finals(rhos, [0.60, 0.58, 0.65]))
    assert ok["passed"] and ok["value"] == pytest.approx(0.05)  # the end points: 0.65 - 0.60
    bad = C.over_realization_accuracy(conv_finals(rhos, [0.60, 0.70, 0.59]))
    assert not bad["passed"] and bad["value"] == pytest.approx(-0.01)


def test_conv_lower_layers_specialize_more_pass_and_fail():
    """Spearman(layer, mean rho over multis): -1 for a falling order, -0.8 with one swapped neighbouring pair (passes at
    the threshold), -0.4 with two swaps."""
    ok = C.lower_layers_specialize_more(conv_finals({1.0: [0.8, 0.64, 0.63, 0.6], 2.0: [0.86, 0.74, 0.68, 0.65]}, [0.5] * 2))
    assert ok["passed"] and ok["value"] == pytest.approx(-1.0)
    edge = C.lower_layers_specialize_more(conv_finals({1.0: [0.8, 0.6, 0.63, 0.5]}, [0.5]))
    assert edge["passed"] and edge["value"] == pytest.approx(-0.8)
    bad = C.lower_layers_specialize_more(conv_finals({1.0: [0.8, 0.5, 0.63, 0.6]}, [0.5]))
    assert not bad["passed"] and bad["value"] == pytest.approx(-0.4)


# ---------------------------------------------------------------- online SGD and its ODEs (docs/model.md 6)


def ode_curve(ratio: float, jobs=("a", "b"), seeds=(1, 2)) -> pd.DataFrame:
    """match_ode rows whose simulation is `ratio` times the ODE loss exp(-t/5) at every evaluation."""
    rows = []
    for job, seed, t in itertools.product(jobs, seeds, np.arange(0.0, 20.5, 0.5)):
        ode = math.exp(-t / 5)
        rows.append({"job": job, "seed": seed, "t": t, "sim": ratio * ode, "ode": ode, "ode0": 1.0})
    return pd.DataFrame(rows)


def test_match_ode_interpolates_in_log_loss():
    ode = pd.DataFrame({"seed": 1, "t": [0.0, 1.0, 2.0], "loss": [1.0, 1e-2, 1e-4]})
    sim = pd.DataFrame({"seed": [1, 1], "t": [0.5, 1.5], "sim": [0.1, 0.001]})
    got = C.match_ode(sim, ode)
    np.testing.assert_allclose(got["ode"], [1e-1, 1e-3]) and np.testing.assert_allclose(got["ode0"], 1.0)


def test_ode_matches_simulation():
    assert C.ode_matches_simulation(ode_curve(1.1))["passed"]  # |log10 1.1| = 0.041
    bad = pd.concat([ode_curve(1.1, jobs=("a",)), ode_curve(2.0, jobs=("b",))])
    c = C.ode_matches_simulation(bad)
    assert not c["passed"] and c["value"] == pytest.approx(math.log10(2.0)) and "worst job b" in c["detail"]


def escapes(times: dict[int, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"d": d, "seed": s, "escape_t": t} for d, ts in times.items() for s, t in enumerate(ts)])


def test_plateau_escape_claims_pass_for_log_growth():
    """escape t = 5 + 3 log d (+ small seed scatter): monotone in d and a straight line in log d."""
    e = escapes({d: [5 + 3 * math.log(d) + 0.1 * s for s in range(3)] for d in (100, 300, 1000, 3000)})
    assert C.plateau_escape_grows_with_d(e)["passed"]
    c = C.plateau_escape_like_log_d(e)
    assert c["passed"] and c["value"] > 0.99


def test_plateau_escape_claims_fail_for_linear_growth_or_no_trend():
    linear = escapes({d: [0.01 * d + 0.1 * s for s in range(3)] for d in (100, 300, 1000, 3000)})
    assert C.plateau_escape_grows_with_d(linear)["passed"]  # it does grow ...
    assert not C.plateau_escape_like_log_d(linear)["passed"]  # ... but like d, not like log d
    flat = escapes({d: [10.0 + s for s in range(3)] for d in (100, 300, 1000, 3000)})
    assert not C.plateau_escape_grows_with_d(flat)["passed"]
    assert not C.plateau_escape_like_log_d(flat)["passed"]  # the same median at every d: no fit, no log law
    never = escapes({d: [math.nan] * 3 for d in (100, 300, 1000, 3000)})  # never escaped: no trend to measure
    assert not C.plateau_escape_grows_with_d(never)["passed"]


def law(kind: str, seeds=(1, 2), t_end=1000.0) -> pd.DataFrame:
    """J(t): a plateau until t = 10, then exp(-(t - 10) / 20) or ((t - 10) / 10 + 1)^-2 (relative to J(0) = 1)."""
    t = np.linspace(0.0, t_end, 2001)
    after = np.exp(-(t - 10) / 20) if kind == "exp" else (np.maximum(t - 10, 0) / 10 + 1) ** -2.0
    J = np.where(t < 10, 1.0, np.minimum(1.0, after)) * 0.3
    J[0] = 1.0
    return pd.concat([pd.DataFrame({"seed": s, "t": t, "loss": J}) for s in seeds], ignore_index=True)


def test_realizable_converges_exponentially():
    assert C.realizable_converges_exponentially(law("exp"))["passed"]
    assert not C.realizable_converges_exponentially(law("pow"))["passed"]


def test_overrealized_converges_as_power_law():
    assert C.overrealized_converges_as_power_law(law("pow"), law("exp"))["passed"]
    assert not C.overrealized_converges_as_power_law(law("exp"), law("exp"))["passed"]  # exponential, and not above
    assert not C.overrealized_converges_as_power_law(law("pow"), law("pow") .assign(loss=lambda f: f["loss"] * 10))["passed"]
