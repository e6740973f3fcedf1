"""Cost model of sweeps and reproductions (`sweep --dry-run`, `reproduce --dry-run`): FLOP counts and measured rates.

Per job: seed-steps = seeds x epochs x steps per epoch; a training step of all seeds costs about 6 x S x batch x
sum(fan_in x fan_out) FLOPs (forward 2, backward 4), an evaluation 2 x S x samples x sum(fan_in x fan_out), three times
that on the training set when gradient norms are measured.

Wall time is not FLOPs / peak: small steps are latency-bound. `calibrate` measures, in this process, the smallest and
the largest job of a family (by step FLOPs) with the job's own config: build, one evaluation, a training span of a few
hundred milliseconds, and the write of a run dir. Each quantity then follows a line through the two measurements:
seconds per step = a + b x step FLOPs (a per-step overhead plus a FLOP term), seconds per evaluation likewise in
evaluation FLOPs, build + write in stored numbers (a training set above CALIBRATION_TRAIN samples is measured at that
size). A job outside the calibrated range of a term is extrapolated twice (on the line and at the nearest measured
rate) and shown as a range. Jobs are then scheduled longest first on the workers, as the
local executor runs them (`makespan`). An estimate, not a promise: `benchmarks/bench_cost.py` checks it against real
jobs and BENCHMARKS.md records how close it came.
"""

from __future__ import annotations

import functools
import heapq
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import pipelines
from ..config import Config, build_config, config_maker, steps_per_epoch
from ..ensemble.optimizers import full_batch
from ..mlp.data import train_size
from ..mlp.train import reschedule

PIPELINES = ("mlp",)  # FLOP counts of MLP ensembles; a conv run's cost is not modelled (refused, exit 2)
SPAN = 0.3  # seconds of training a calibration times: long enough that timer noise and one slow step do not matter
MAX_CALIBRATION_STEPS = 20_000
# a larger fixed training set is calibrated at this size: the step does not depend on it, and building the set and
# evaluating on it follow their lines in stored numbers and evaluation FLOPs (answering in seconds, not minutes)
CALIBRATION_TRAIN = 10_000
# a first guess of a step's seconds (overhead + FLOPs at a CPU core's rate), so one timed run usually lasts SPAN
GUESS_STEP_OVERHEAD, GUESS_FLOPS = 2e-5, 3e10


@dataclass(frozen=True)
class JobCost:
    """FLOP counts of one job: training steps, evaluations, and how many of each."""

    seeds: int
    steps: int  # steps of the ensemble (all seeds advance together)
    step_flops: float  # per step, all seeds of the job
    evals: int
    eval_flops: float  # per evaluation, all seeds of the job
    stored: float  # numbers the job builds and writes (data sets, tables): what its fixed cost scales with

    @property
    def seed_steps(self) -> int:
        """Seeds x steps."""
        return self.seeds * self.steps

    @property
    def gflop(self) -> float:
        """Training and evaluation FLOPs of the whole job, in units of 1e9."""
        return (self.steps * self.step_flops + self.evals * self.eval_flops) / 1e9


def job_cost(cfg: Config) -> JobCost:
    """FLOP counts of training `cfg` (all its seeds)."""
    pipelines.require(cfg, PIPELINES, "the cost estimate (--dry-run)")
    widths = [cfg.input_dim, *cfg.student_widths, cfg.output_dim]
    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    tc, S = cfg.train, len(cfg.seeds)
    batch = cfg.data.n_train if full_batch(tc.optimizer) else tc.batch_size
    steps = steps_per_epoch(tc, train_size(cfg))
    evals = 1 + sum(1 for e in range(tc.epochs) if (e + 1) % cfg.eval.every == 0 or e + 1 == tc.epochs)
    n_train = train_size(cfg) * (3 if cfg.eval.grad_norm else 1)
    stored = S * ((train_size(cfg) + cfg.data.n_eval) * cfg.input_dim + evals * (sum(widths[1:-1]) or 1))
    return JobCost(
        S, tc.epochs * steps, 6.0 * S * batch * macs, evals, 2.0 * S * macs * (n_train + cfg.data.n_eval), stored
    )


@dataclass(frozen=True)
class Sample:
    """What one calibration measured on one job's config."""

    cost: JobCost
    t_step: float  # seconds per step of the ensemble
    t_eval: float  # seconds per evaluation
    t_fixed: float  # seconds to build the setup and write the run dir
    n_train: int = 0  # the training set it was measured on (CALIBRATION_TRAIN where the job's is larger)


def _stamp(stamps: list[float], _: object) -> None:
    stamps.append(time.perf_counter())


def _variant(cfg: Config, *, epochs: int, steps: int, every: int) -> Config:
    tree = cfg.to_dict()
    tree["train"] |= {"epochs": epochs, "steps_per_epoch": steps, "checkpoint_every": None}
    tree["eval"] |= {"every": every}
    return build_config(tree)


def _intervals(cfg: Config, setup: Any, *, steps: int, epochs: int) -> tuple[list[float], float, Any]:
    """Seconds between consecutive evaluations of `epochs` epochs of `steps` steps each, evaluated every epoch, on
    the built `setup` (trained further in place); the seconds of the call outside them; the result."""
    variant = _variant(cfg, epochs=epochs, steps=steps, every=1)
    stamps: list[float] = []
    t0 = time.perf_counter()
    result = pipelines.train(
        variant, progress=False, on_eval=functools.partial(_stamp, stamps), setup=reschedule(setup, variant)
    )
    total = time.perf_counter() - t0
    return [b - a for a, b in zip(stamps[:-1], stamps[1:])], total - (stamps[-1] - stamps[0]), result


def measure(cfg: Config) -> Sample:
    """Time one job's config here: build, an evaluation, a step, the last evaluation's extra work, and the write.

    Evaluations one step apart give one step + an evaluation (the median of the two spacings after the first, which
    loads the compiled step); the final spacing holds the last evaluation's extra work, a fixed cost of the job. A run
    of n steps evaluated at its start and end only gives n steps + that final spacing: the step is the difference over
    n - 1, n chosen from the step's FLOPs and grown until the difference lasts SPAN seconds, the faster of two such runs
    kept. Nine evaluations in all:
    on large jobs they, not the steps, are what a calibration costs.
    """
    t0 = time.perf_counter()
    setup = pipelines.build(cfg)
    t_build = time.perf_counter() - t0
    short, outside, _ = _intervals(cfg, setup, steps=1, epochs=4)
    one = statistics.median(short[1:-1])  # one step and one evaluation
    last_extra = max(short[-1] - one, 0.0)
    guess = GUESS_STEP_OVERHEAD + job_cost(cfg).step_flops / GUESS_FLOPS
    steps = int(min(MAX_CALIBRATION_STEPS, max(16, 1.3 * SPAN / guess)))
    while True:
        long, _, result = _intervals(cfg, setup, steps=steps, epochs=1)
        training = long[-1] - short[-1]
        if training >= SPAN or steps >= MAX_CALIBRATION_STEPS:
            break
        steps = min(MAX_CALIBRATION_STEPS, max(2 * steps, int(steps * 1.3 * SPAN / max(training, 1e-6))))
    # once more at the same length, the faster kept: a burst of other work on the machine slows one span, not both
    again, _, _ = _intervals(cfg, setup, steps=steps, epochs=1)
    training = min(training, again[-1] - short[-1])
    t_step = max(training, 0.0) / (steps - 1)
    t_eval = max(one - t_step, 0.0)
    with tempfile.TemporaryDirectory(prefix="studentspec-cost-") as tmp:
        t0 = time.perf_counter()
        pipelines.write_run(result, f"{tmp}/run")
        t_write = time.perf_counter() - t0
    # a job's fixed cost: build, the training call outside its evaluations and steps, the final extra, the write
    return Sample(job_cost(cfg), t_step, t_eval, t_build + outside + last_extra + t_write, train_size(cfg))


def _line(x1: float, y1: float, x2: float, y2: float) -> tuple[float, float]:
    """(a, b) of y = a + b x through two measurements, both >= 0 (a single or degenerate point: through 0)."""
    if x2 <= x1 * 1.05 or y2 <= y1:
        return 0.0, max(y1, y2) / max(x1, x2, 1e-30)
    b = (y2 - y1) / (x2 - x1)
    a = y1 - b * x1
    if a < 0:  # a noisy pair: keep the rate of the larger one, no negative overhead
        return 0.0, y2 / x2
    return a, b


@dataclass(frozen=True)
class Rates:
    """A family's time per step, per evaluation and per job, as lines through the calibrated jobs."""

    samples: tuple[Sample, ...]
    step: tuple[float, float]
    eval: tuple[float, float]
    fixed: tuple[float, float]

    @classmethod
    def fit(cls, samples: list[Sample]) -> Rates:
        """Lines through the smallest and largest measured job."""

        def line(x: Callable[[Sample], float], y: Callable[[Sample], float]) -> tuple[float, float]:
            lo, hi = sorted(samples, key=x)[0], sorted(samples, key=x)[-1]
            return _line(x(lo), y(lo), x(hi), y(hi))

        return cls(
            tuple(samples),
            line(lambda s: s.cost.step_flops, lambda s: s.t_step),
            line(lambda s: s.cost.eval_flops, lambda s: s.t_eval),
            line(lambda s: s.cost.stored, lambda s: s.t_fixed),
        )

    def seconds(self, c: JobCost) -> tuple[float, float, float]:
        """(low, projected, high) seconds of one job: each term (steps, evaluations, fixed) on its line, and where
        the job lies outside the measured ones in that term's FLOPs or size, also at the nearest measured rate."""
        low = mid = high = 0.0
        terms = (
            (self.step, lambda s: s.cost.step_flops, lambda s: s.t_step, c.step_flops, c.steps),
            (self.eval, lambda s: s.cost.eval_flops, lambda s: s.t_eval, c.eval_flops, c.evals),
            (self.fixed, lambda s: s.cost.stored, lambda s: s.t_fixed, c.stored, 1),
        )
        for line, x, y, at, count in terms:
            on = line[0] + line[1] * at
            xs = [x(s) for s in self.samples]
            scaled = on
            if not min(xs) * 0.999 <= at <= max(xs) * 1.001:
                near = min(self.samples, key=lambda s: abs(x(s) - at))
                scaled = y(near) / max(x(near), 1e-30) * at
            mid += count * on
            low += count * min(on, scaled)
            high += count * max(on, scaled)
        return low, mid, high


def makespan(seconds: list[float], workers: int) -> float:
    """Wall time of jobs taken longest first, each by the next free worker (what the local executor does)."""
    free = [0.0] * max(1, min(workers, len(seconds) or 1))
    for s in sorted(seconds, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


def calibrate(configs: list[Config], *, threads: int) -> tuple[Rates, list[int]]:
    """Rates of a family of jobs, measured on its smallest and largest job (by step FLOPs) at `threads` threads;
    returns the rates and the indices of the measured jobs."""
    costs = [job_cost(c) for c in configs]
    order = sorted(range(len(configs)), key=lambda i: (costs[i].step_flops, costs[i].eval_flops))
    picks = sorted({order[0], order[-1]})
    previous = torch.get_num_threads()
    try:
        samples = []
        for i in picks:
            tree = configs[i].to_dict()
            tree["train"]["threads"] = threads
            if train_size(configs[i]) > CALIBRATION_TRAIN:
                tree["data"]["n_train"] = CALIBRATION_TRAIN
            samples.append(measure(build_config(tree)))
    finally:
        torch.set_num_threads(previous)
    return Rates.fit(samples), picks


@dataclass(frozen=True)
class Estimate:
    """What a set of jobs costs: counts, FLOPs, and the projected wall time with its range."""

    jobs: int
    seed_steps: int
    gflop: float
    seconds: float  # projected wall time on the workers
    low: float  # the range where jobs lie outside the calibrated ones (low = high = seconds inside)
    high: float
    calibrated: tuple[int, ...] = ()  # indices of the jobs measured
    samples: tuple[Sample, ...] = ()  # what those measurements gave
    job_seconds: tuple[float, ...] = ()  # projected seconds of every job

    def describe(self) -> str:
        """One line: the wall time, as a range when extrapolated."""
        if self.high > self.low * 1.02:
            return f"{duration(self.seconds)} (range {duration(self.low)} - {duration(self.high)}, extrapolated)"
        return duration(self.seconds)

    def calibration(self, ids: list[str]) -> str:
        """One line per measured job: its id and rates."""
        return "\n".join(
            f"  calibrated on job {ids[i]}: {s.t_step * 1e3:.3f} ms/step "
            f"({s.cost.step_flops / max(s.t_step, 1e-12) / 1e9:.2f} GFLOP/s), {s.t_eval:.3f} s/evaluation, "
            f"{s.t_fixed:.2f} s build + write" + (f" (at N = {s.n_train})" if s.n_train == CALIBRATION_TRAIN else "")
            for i, s in zip(self.calibrated, self.samples)
        )


def duration(seconds: float) -> str:
    """Seconds as a short human figure: 42 s, 3.5 min, 2.1 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate(
    config: str | None,
    overrides: list[list[str]],
    seeds: list[list[int]],
    *,
    workers: int,
    threads: int,
    tasks: int | None = None,
    configs: list[Config] | None = None,
) -> Estimate:
    """Seed-steps, GFLOP and projected wall time (with its range) of jobs on `workers` workers.

    `tasks`: how many tasks the jobs run as (packed jobs share one; default one per job): the work is spread over
    at most that many workers. Packing's per-step saving is not modelled (an upper bound for packed small students).
    `configs`: the jobs' validated Configs (sweep.grid.expand's), else each job is validated here.
    """
    if configs is None:
        make = config_maker(config)  # the file read once
        configs = [make([*o, f"seeds={s}"]) for o, s in zip(overrides, seeds)]
    if not configs:
        return Estimate(0, 0, 0.0, 0.0, 0.0, 0.0)
    costs = [job_cost(c) for c in configs]
    rates, picks = calibrate(configs, threads=threads)
    per_job = [rates.seconds(c) for c in costs]
    slots = max(1, min(workers, tasks or len(costs)))
    return Estimate(
        len(costs),
        sum(c.seed_steps for c in costs),
        sum(c.gflop for c in costs),
        makespan([s[1] for s in per_job], slots),
        makespan([s[0] for s in per_job], slots),
        makespan([s[2] for s in per_job], slots),
        tuple(picks),
        rates.samples,
        tuple(s[1] for s in per_job),
    )
