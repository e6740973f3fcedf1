"""The cost model of --dry-run (sweep/cost.py): FLOP counts written out by hand, the fitted lines, the range shown
when a job lies outside the calibrated ones, longest-first scheduling, and `reproduce --dry-run` writing nothing.

No test here times anything against a target (speed lives in benchmarks/bench_cost.py)."""

from __future__ import annotations

import itertools
import os

import pytest

from studentspec.cli import main
from studentspec.pipelines import load_config
from studentspec.sweep import cost
from probe import assert_refused, snapshot

SMALL = ["input_dim=6", "output_dim=3", "teacher.widths=[2]", "data.n_train=50", "data.n_eval=40"]


def test_job_cost_counts_flops_as_written_out():
    """Two-layer student 6 -> 2 x 3 -> 3, 4 seeds, batch 5, 7 steps x 3 epochs, evaluation every 2 epochs."""
    cfg = load_config(
        None,
        [
            *SMALL,
            "student.multi=3",
            "seeds=[1,2,3,4]",
            "train.batch_size=5",
            "train.steps_per_epoch=7",
            "train.epochs=3",
            "eval.every=2",
            "eval.grad_norm=false",
        ],
    )
    c = cost.job_cost(cfg)
    macs = 6 * 6 + 6 * 3  # fan_in x fan_out summed over the student's two layers
    assert c.seeds == 4 and c.steps == 21 and c.seed_steps == 84
    assert c.step_flops == 6 * 4 * 5 * macs
    assert c.evals == 3  # before training, after epoch 2, after the last epoch (3)
    assert c.eval_flops == 2 * 4 * macs * (50 + 40)
    assert c.gflop == pytest.approx((21 * c.step_flops + 3 * c.eval_flops) / 1e9)


def test_line_through_two_measurements_and_its_guards():
    a, b = cost._line(10.0, 3.0, 30.0, 7.0)
    assert (a, b) == pytest.approx((1.0, 0.2))
    # a negative intercept (noise) is not kept: the larger job's own rate, through 0
    assert cost._line(10.0, 5.0, 30.0, 30.0) == pytest.approx((0.0, 1.0))
    # one point (or two of the same size): through 0
    assert cost._line(10.0, 2.0, 10.0, 2.0) == pytest.approx((0.0, 0.2))


def _sample(step_flops: float, t_step: float) -> cost.Sample:
    c = cost.JobCost(seeds=1, steps=100, step_flops=step_flops, evals=2, eval_flops=step_flops, stored=10.0)
    return cost.Sample(c, t_step, t_eval=2 * t_step, t_fixed=1.0)


def test_rates_interpolate_inside_and_give_a_range_outside():
    rates = cost.Rates.fit([_sample(1e6, 1e-3), _sample(1e8, 2e-2)])
    inside = cost.JobCost(seeds=1, steps=1000, step_flops=1e7, evals=3, eval_flops=1e7, stored=10.0)
    low, mid, high = rates.seconds(inside)
    a, b = cost._line(1e6, 1e-3, 1e8, 2e-2)
    ea, eb = cost._line(1e6, 2e-3, 1e8, 4e-2)
    assert low == mid == high == pytest.approx(1000 * (a + b * 1e7) + 3 * (ea + eb * 1e7) + 1.0)
    outside = cost.JobCost(seeds=1, steps=1000, step_flops=1e10, evals=3, eval_flops=1e10, stored=10.0)
    low, mid, high = rates.seconds(outside)
    at_rate = 1000 * 2e-2 * 100 + 3 * 4e-2 * 100 + 1.0  # the largest job's seconds per FLOP, scaled
    assert low < high and low <= mid <= high
    assert min(abs(low - at_rate), abs(high - at_rate)) < 1e-9 * at_rate


@pytest.mark.parametrize(
    ("jobs", "workers", "expected"),
    [([3, 3, 2, 2, 2], 2, 7), ([5, 1, 1, 1], 2, 5), ([4, 4, 4], 4, 4), ([2, 2], 1, 4), ([], 3, 0)],
)
def test_makespan_longest_first(jobs, workers, expected):
    """Longest processing time first, each job to the worker that frees first (hand-scheduled cases)."""
    assert cost.makespan([float(j) for j in jobs], workers) == pytest.approx(expected)


def test_makespan_never_beats_a_lower_bound():
    """Any schedule takes at least the longest job and the total over the workers (random cases)."""
    for jobs in itertools.islice(itertools.product([1.0, 2.5, 7.0], repeat=5), 0, 243, 17):
        for w in (1, 2, 3):
            span = cost.makespan(list(jobs), w)
            assert span >= max(max(jobs), sum(jobs) / w) - 1e-12
            assert span <= sum(jobs) / w + max(jobs) + 1e-12  # list scheduling's bound


def test_measure_gives_positive_rates_for_a_small_job():
    cfg = load_config(None, [*SMALL, "seeds=[1,2]", "train.steps_per_epoch=10", "train.epochs=2"])
    s = cost.measure(cfg)
    assert s.t_step > 0 and s.t_eval >= 0 and s.t_fixed > 0
    assert s.cost == cost.job_cost(cfg)


def test_reproduce_dry_run_projects_every_part_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert main(["reproduce", "deep", "--scale", "tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "part lshape:" in out and "part sample:" in out and "total of the sweeps:" in out
    assert out.count("calibrated on job") >= 3  # the sample part: its smallest and largest job
    assert snapshot(tmp_path) == before and not os.path.exists(tmp_path / "runs")


def test_reproduce_dry_run_of_an_own_pipeline_without_a_cost_model_is_one_line(tmp_path, capsys, monkeypatch):
    """An experiment with its own pipeline and no dry_run (cifar10 and images have one: tests/test_conv_cost.py)."""
    from studentspec.paper.experiments import EXPERIMENTS, Experiment

    own = Experiment("own-pipeline", {}, run=lambda out, scale, overrides, *, progress, dataset=None: None)
    monkeypatch.setitem(EXPERIMENTS, own.name, own)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    rc = main(["reproduce", "own-pipeline", "--scale", "tiny", "--dry-run"])
    assert_refused(rc, capsys, ("own-pipeline", "--dry-run"), tmp_path, before)


def test_a_large_training_set_is_calibrated_smaller_and_projected_on_its_lines(monkeypatch):
    """A job above CALIBRATION_TRAIN is measured at that size; its evaluations (FLOPs on the training set) and its
    build lie beyond the measured ones, so the projection is a range around the lines' value."""
    monkeypatch.setattr(cost, "CALIBRATION_TRAIN", 30)
    small, large = (
        load_config(None, [*SMALL, f"data.n_train={n}", "train.steps_per_epoch=10", "train.epochs=2"]) for n in (20, 50)
    )
    rates, picks = cost.calibrate([small, large], threads=1)
    assert picks == [0, 1]
    assert [s.n_train for s in rates.samples] == [20, 30]
    assert rates.samples[1].cost == cost.job_cost(
        load_config(None, [*SMALL, "data.n_train=30", "train.steps_per_epoch=10", "train.epochs=2"])
    )
    low, mid, high = rates.seconds(cost.job_cost(large))
    assert low <= mid <= high and low < high


def test_per_term_range_only_for_the_term_outside():
    """Same step FLOPs, a larger evaluation: only the evaluation term is extrapolated (hand-computed bounds)."""
    a = cost.JobCost(seeds=1, steps=100, step_flops=1e6, evals=2, eval_flops=1e6, stored=10.0)
    b = cost.JobCost(seeds=1, steps=100, step_flops=1e6, evals=2, eval_flops=3e6, stored=20.0)
    rates = cost.Rates.fit([cost.Sample(a, 1e-3, 1.0, 1.0), cost.Sample(b, 1e-3, 2.0, 1.5)])
    job = cost.JobCost(seeds=1, steps=10, step_flops=1e6, evals=4, eval_flops=9e6, stored=15.0)
    low, mid, high = rates.seconds(job)
    on_line = 0.5 + 0.5e-6 * 9e6  # t_eval through (1e6, 1.0) and (3e6, 2.0)
    at_rate = 2.0 / 3e6 * 9e6
    fixed = 0.5 + 0.05 * 15.0  # inside the measured sizes: on its line
    step = 1e-3  # both steps measured 1 ms (a flat line through 0)
    assert mid == pytest.approx(10 * step + 4 * on_line + fixed)
    assert low == pytest.approx(10 * step + 4 * min(on_line, at_rate) + fixed)
    assert high == pytest.approx(10 * step + 4 * max(on_line, at_rate) + fixed)
