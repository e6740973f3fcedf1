"""Cost estimate of a sweep for `studentspec sweep --dry-run`: FLOP counts, calibrated by one short run.

Per job: seed-steps = seeds x epochs x steps per epoch; a training seed-step costs about
6 x batch x sum(fan_in x fan_out) FLOPs (forward 2, backward 4), an evaluation 2 x samples x
sum(fan_in x fan_out) per seed, three times that on the training set when gradient norms are
measured. Wall time: the first job's config is built and timed for evaluations and a few
hundred steps in this process (calibrate()); other jobs scale by their FLOP counts; jobs are spread over the
workers. An estimate, not a promise: small jobs run below the calibrated rate.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch

from .. import pipelines
from ..config import Config, build_config, config_maker, steps_per_epoch
from ..ensemble.optimizers import full_batch
from ..mlp.data import train_size

PIPELINES = ("mlp",)  # FLOP counts of MLP ensembles; a conv run's cost is not modelled (refused, exit 2)


@dataclass
class JobCost:
    """FLOPs of one job: training steps, evaluations, and how many of each."""

    seed_steps: int
    step_flops: float  # per step, all seeds of the job
    evals: int
    eval_flops: float  # per evaluation, all seeds of the job


def job_cost(cfg: Config) -> JobCost:
    """FLOP counts of training `cfg` (all its seeds)."""
    pipelines.require(cfg, PIPELINES, "the cost estimate (sweep --dry-run)")
    widths = [cfg.input_dim, *cfg.student_widths, cfg.output_dim]
    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    tc, S = cfg.train, len(cfg.seeds)
    batch = cfg.data.n_train if full_batch(tc.optimizer) else tc.batch_size
    steps = steps_per_epoch(tc, train_size(cfg))
    evals = 1 + sum(1 for e in range(tc.epochs) if (e + 1) % cfg.eval.every == 0 or e + 1 == tc.epochs)
    n_train = train_size(cfg) * (3 if cfg.eval.grad_norm else 1)
    return JobCost(S * tc.epochs * steps, 6.0 * S * batch * macs, evals, 2.0 * S * macs * (n_train + cfg.data.n_eval))


def _stamp(stamps: list[float], _: object) -> None:
    stamps.append(time.perf_counter())


def calibrate(cfg: Config, steps: int = 200) -> tuple[float, float, float]:
    """Seconds for build(), one evaluation, and one training step of `cfg`, measured here.

    One setup trains twice: one epoch of `steps` steps between two evaluations (span a), then
    two epochs between two evaluations (span b), so a step costs (b - a) / steps and an
    evaluation a - steps x that, with no warm-up evaluation in either difference.
    """
    tree = cfg.to_dict()
    tree["train"] |= {"epochs": 1, "steps_per_epoch": steps, "threads": cfg.train.threads}
    tree["eval"] |= {"every": 1}
    one = build_config(tree)
    tree["train"]["epochs"], tree["eval"]["every"] = 2, 2
    two = build_config(tree)
    t0 = time.perf_counter()
    setup = pipelines.build(one)
    t_build = time.perf_counter() - t0
    spans = []
    for c in (one, two):
        stamps: list[float] = []
        pipelines.train(c, progress=False, on_eval=functools.partial(_stamp, stamps), setup=setup)
        spans.append(stamps[-1] - stamps[0])
    t_step = max(spans[1] - spans[0], 0.0) / steps
    t_eval = max(spans[0] - steps * t_step, 0.0)
    return t_build, t_eval, t_step


def estimate(
    config: str | None,
    overrides: list[list[str]],
    seeds: list[list[int]],
    *,
    workers: int,
    threads: int,
    tasks: int | None = None,
    configs: list[Config] | None = None,
) -> dict[str, float]:
    """Seed-steps, GFLOP and projected wall time of jobs (overrides and seeds per job) on `workers` workers.

    `tasks`: how many tasks the jobs run as (packed jobs share one; default one per job): the work is spread over
    at most that many workers. Packing's per-step saving is not modelled (an upper bound for packed small students).
    `configs`: the jobs' validated Configs (sweep.grid.expand's), else each job is validated here.
    """
    if configs is None:
        make = config_maker(config)  # the file read once
        configs = [make([*o, f"seeds={s}"]) for o, s in zip(overrides, seeds)]
    costs = [job_cost(c) for c in configs]
    if not costs:
        return {"jobs": 0, "seed_steps": 0, "gflop": 0.0, "seconds": 0.0}
    tree = configs[0].to_dict()
    tree["train"]["threads"] = threads
    first = build_config(tree)
    previous = torch.get_num_threads()
    try:
        t_build, t_eval, t_step = calibrate(first)
    finally:
        torch.set_num_threads(previous)
    ref = costs[0]
    seconds = sum(
        t_build
        + c.evals * t_eval * c.eval_flops / ref.eval_flops
        + c.seed_steps / len(s) * t_step * c.step_flops / ref.step_flops
        for c, s in zip(costs, seeds)
    )
    gflop = sum(c.seed_steps / len(s) * c.step_flops + c.evals * c.eval_flops for c, s in zip(costs, seeds)) / 1e9
    return {
        "jobs": len(costs),
        "seed_steps": sum(c.seed_steps for c in costs),
        "gflop": gflop,
        "seconds": seconds / max(1, min(workers, tasks or len(costs))),
        "t_step": t_step,
        "t_eval": t_eval,
        "t_build": t_build,
    }
