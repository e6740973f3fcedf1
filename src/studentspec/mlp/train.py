"""The ensemble trainer: every seed of a config in one batched computation.

build() makes the teacher, the data and the students; train() runs the one epoch loop of every pipeline
(ensemble/loop.py) with the step strategy choose_steps() picks once (mlp/steps.py: compiled, hand backward or
autograd), evaluating with _evaluate_all().
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch
from torch import Tensor

from ..config import Config, ConfigError, check_device, lr_at  # lr_at: one definition for the MLP and conv trainers
from ..ensemble import loop as eloop
from ..ensemble import optimizers, seeding
from ..ensemble.hooks import DEFAULT_HOOKS, Evaluation, Hooks
from ..ensemble.optim import Optimizer
from . import backprop
from . import kernel as ckernel
from .data import BatchStream, label, make_inputs, train_size
from .evaluate import SplitEval, evaluate, fanout_norms, teacher_hidden
from .memory import CACHE_BYTES, check_fits
from .metrics import Context, EvalMetric
from .nets import Net, make_batchnorms
from .steps import AutogradSteps, BackwardSteps, CompiledSteps, Constraints, MLPSteps, unit_columns
from .teacher import build_teacher, fit_teacher

DTYPES = {"float32": torch.float32, "float64": torch.float64}
STEP_BLOCK, BLOCK_FLOPS = 50, 5e9  # compiled steps per call: at most 50, and about 5 GFLOP (a second or two)


@dataclass
class Setup:
    """One ensemble ready to train: teacher, data and student for every seed."""

    cfg: Config
    teacher: Net  # float64, CPU: the reference copy that is stored
    teacher_run: Net  # on the run's device and dtype
    student: Net
    stream: BatchStream
    x_eval: Tensor
    y_eval: Tensor
    dtype: torch.dtype
    device: torch.device
    # split -> (its inputs, the teacher's hidden activations on them): the teacher is fixed, so
    # evaluations reuse them for as long as the split's tensor is the same object
    teacher_cache: dict[str, tuple[Tensor, list[Tensor]]] = field(default_factory=dict)
    # split -> (its inputs, inputs and labels in eval.dtype) when that differs from the run's dtype
    eval_copies: dict[str, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)
    build_seconds: float = 0.0  # counted in the run's wall time
    # the per-evaluation metrics this run measures: the pipeline sets those its config switches on
    # (theory/metric.py METRICS); a Setup of build() alone measures none
    metrics: tuple[EvalMetric, ...] = ()


def init_student(
    cfg: Config, gens: list[torch.Generator], dtype: torch.dtype, device: torch.device, *, teacher: Net | None = None
) -> Net:
    """Student weights N(0, init_std^2) with zero biases, or PyTorch's Linear default, times init_scale;
    or the teacher plus noise (student.perturb); then the init knobs of docs/model.md 4.5 (_init_knobs)."""
    sc = cfg.student
    needs = [
        k
        for k, on in (
            ("student.perturb", sc.perturb is not None),
            ("student.same_dir", sc.same_dir),
            ("student.same_sign", sc.same_sign),
            ("student.adv_init", sc.adv_init != "none"),
        )
        if on
    ]
    if needs and teacher is None:
        raise ConfigError(f"{needs[0]}: the student is initialized from the teacher, which this command does not build")
    dims = [cfg.input_dim, *cfg.student_widths, cfg.output_dim]
    weights: list[list[Tensor]] = [[] for _ in dims[1:]]
    biases: list[list[Tensor]] = [[] for _ in dims[1:]]
    for s, g in enumerate(gens):
        for l, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            if (
                sc.perturb is not None and teacher is not None
            ):  # the original's set_teacher: noise from the student's generator
                w = teacher.weights[l][s] + torch.randn(fan_in, fan_out, generator=g, dtype=torch.float64) * sc.perturb
                b = teacher.biases[l][s] + torch.randn(fan_out, generator=g, dtype=torch.float64) * sc.perturb
            elif sc.init_std is not None:
                w = torch.randn(fan_in, fan_out, generator=g, dtype=torch.float64) * sc.init_std
                b = torch.zeros(fan_out, dtype=torch.float64)
            else:  # nn.Linear.reset_parameters: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both
                bound = 1.0 / math.sqrt(fan_in)
                w = (torch.rand(fan_out, fan_in, generator=g, dtype=torch.float64) * 2 - 1).T * bound
                b = (torch.rand(fan_out, generator=g, dtype=torch.float64) * 2 - 1) * bound
            weights[l].append(w * sc.init_scale)
            biases[l].append(b * sc.init_scale)
    t = cfg.teacher
    norms = make_batchnorms(len(gens), cfg.student_widths, t.batchnorm_affine, dtype) if t.batchnorm != "none" else []
    stacked_w, stacked_b = [torch.stack(w) for w in weights], [torch.stack(b) for b in biases]
    _init_knobs(cfg, stacked_w, stacked_b, teacher)
    net = Net(stacked_w, stacked_b, t.activation, t.leaky_slope, t.batchnorm, norms)
    net = net.to(device, dtype)
    for p in net.parameters():
        p.requires_grad_(True)
    return net


def _init_knobs(cfg: Config, weights: list[Tensor], biases: list[Tensor], teacher: Net | None) -> None:
    """The init knobs of docs/model.md 4.5 on the stacked float64 student [S, ...], in place, in the original code's
    order: same_dir, same_sign (after perturb, in init_student),
    adv_init; then no_bias and normalize as the training keeps them.

    Norms and inner products are taken one seed at a time, so a seed's init does not depend on the ensemble size.
    """
    sc = cfg.student
    if (
        teacher is not None and sc.same_dir
    ):  # set_same_dir: r = ||W_l|| / ||W*_l|| (Frobenius, weights only); (W_l, b_l) := r (W*_l, b*_l)
        for l, (tw, tb) in enumerate(zip(teacher.weights, teacher.biases)):
            r = torch.stack([weights[l][s].norm() / tw[s].norm() for s in range(tw.shape[0])])
            weights[l], biases[l] = tw * r[:, None, None], tb * r[:, None]
    if (
        teacher is not None and sc.same_sign
    ):  # set_same_sign: flip each weight and bias whose sign is opposite to the teacher's
        for l, (tw, tb) in enumerate(zip(teacher.weights, teacher.biases)):
            weights[l] = torch.where(torch.sign(weights[l]) * torch.sign(tw) < 0, -weights[l], weights[l])
            biases[l] = torch.where(torch.sign(biases[l]) * torch.sign(tb) < 0, -biases[l], biases[l])
    if teacher is not None and sc.adv_init != "none":
        # first-layer weight vectors (not the bias), against the weakest teacher node's: the last column, index m-1
        weakest = teacher.weights[0][:, :, -1]
        dots = torch.stack([weakest[s] @ weights[0][s] for s in range(weakest.shape[0])])  # [S, n_1]
        flip = dots > 0 if sc.adv_init == "adv" else dots < 0  # adv: point away from it; help: towards it
        weights[0] = torch.where(flip[:, None, :], -weights[0], weights[0])
    if cfg.teacher.no_bias:
        for l in range(len(biases)):
            biases[l] = torch.zeros_like(biases[l])
    if sc.normalize:  # the original two-layer script normalizes at init too, then after every update
        for l in range(len(weights) - 1):
            weights[l] = unit_columns(weights[l])


def build(cfg: Config) -> Setup:
    """Construct teacher, evaluation set, training stream and student for every seed."""
    start = time.perf_counter()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    check_device(cfg.train.device)
    check_fits(cfg)
    dtype, device = DTYPES[cfg.train.dtype], torch.device(cfg.train.device)
    data_gens = seeding.generators(cfg.seeds, "data")
    teacher = build_teacher(cfg, seeding.generators(cfg.seeds, "teacher"))
    x_eval64 = make_inputs(cfg, teacher, data_gens, cfg.data.n_eval, training=False)
    fit_teacher(teacher, x_eval64, cfg.teacher.tune)
    teacher_run = teacher.to(device, dtype)
    x_eval = x_eval64.to(device, dtype)
    n_train = train_size(cfg)
    x_train = make_inputs(cfg, teacher, data_gens, n_train, training=True)
    stream = BatchStream(cfg, teacher_run, data_gens, seeding.generators(cfg.seeds, "sampler"), x_train, dtype, device)
    student = init_student(cfg, seeding.generators(cfg.seeds, "student"), dtype, device, teacher=teacher)
    return Setup(
        cfg,
        teacher,
        teacher_run,
        student,
        stream,
        x_eval,
        label(teacher_run, x_eval),
        dtype,
        device,
        build_seconds=time.perf_counter() - start,
    )


@dataclass
class EvalPoint:
    """Metrics of one evaluation: step, split ('train'/'eval'), values, gradient norms [S, L]."""

    step: int
    split: str
    result: SplitEval
    grad_norm: Tensor | None
    student_fanout: list[Tensor]  # per hidden layer, [S, n_l]
    extra: dict[str, Any] = field(default_factory=dict)  # the run's metrics (Setup.metrics): name -> value


@dataclass
class TrainResult(eloop.RunResult):
    """A finished ensemble: its setup (with trained student),
    every evaluation, divergences (ensemble.loop.RunResult)."""

    setup: Setup
    evals: list[EvalPoint] = field(default_factory=list)
    kernel: str = "torch"  # which training step ran: "c" (ckernel) or "torch"
    eval_time: float = 0.0  # seconds of wall_time spent evaluating


@dataclass
class Loop(eloop.Loop):
    """The training loop between epochs (ensemble.loop.Loop): what a checkpoint saves (mlp/checkpoint.py) and a resume
    restores. Everything else the MLP loop carries across epochs lives in the setup's student and batch stream."""

    setup: Setup
    result: TrainResult


def _evaluate_all(s: Setup, step: int, kernel: str) -> list[EvalPoint]:
    """Every split's evaluation at `step`, on the path the training step takes (`kernel`: c or torch)."""
    cfg = s.cfg
    splits = [("eval", s.x_eval, s.y_eval)]
    if train_size(cfg):
        splits.insert(0, ("train", s.stream.x_train, s.stream.y_train))
    dtype = DTYPES[cfg.eval.dtype or cfg.train.dtype]
    teacher, student = (
        (s.teacher_run, s.student)
        if dtype == s.dtype
        else (s.teacher_run.to(s.device, dtype), s.student.to(s.device, dtype))
    )
    points = []
    inputs = {name: (x, y) for name, x, y in splits}  # the run's dtype, as metrics see them
    for name, x, y in splits:
        if (
            dtype != s.dtype
        ):  # eval.dtype: the split rounded once to the evaluation's precision, kept while the split is the same
            copies = s.eval_copies.get(name)
            if copies is None or copies[0] is not x:
                copies = s.eval_copies[name] = (x, x.to(dtype), y.to(dtype))
            x, y = copies[1], copies[2]
        cached = s.teacher_cache.get(name)
        acts = (
            cached[1]
            if cached is not None and cached[0] is x
            else teacher_hidden(teacher, x, cfg.eval.batch_size, CACHE_BYTES)
        )
        if acts is not None:
            s.teacher_cache[name] = (x, acts)
        res = evaluate(
            teacher,
            student,
            x,
            y,
            loss_kind=cfg.train.loss,
            chunk=cfg.eval.batch_size,
            with_grad=cfg.eval.grad_norm and name == "train",
            kernel=kernel,
            teacher_acts=acts,
        )
        points.append(EvalPoint(step, name, res, res.grad_norm, fanout_norms(s.student)))
    if s.metrics:
        ctx = Context(cfg, s.teacher, s.teacher_run, s.student, step, {p.split: p.result for p in points}, inputs)
        for metric in s.metrics:
            points[0].extra[metric.name] = metric.measure(ctx)
    return points


def reschedule(s: Setup, cfg: Config) -> Setup:
    """The same built ensemble (teacher, data, student: trained in place) under `cfg`'s training schedule.

    `cfg` differs from s.cfg only in train.epochs, train.steps_per_epoch and eval.every: the cost model times spans
    of a job's own setup without building it again for every span.
    """
    stream = copy.copy(s.stream)
    stream.cfg = cfg
    return replace(s, cfg=cfg, stream=stream)


def train(s: Setup, hooks: Hooks = DEFAULT_HOOKS) -> TrainResult:
    """Train every seed of a built ensemble in one batched pass, evaluating before training, every eval.every epochs
    and at the end."""
    cfg, tc = s.cfg, s.cfg.train
    opt = Optimizer(s.student.parameters(), tc.optimizer, tc.momentum, tc.weight_decay, (tc.betas[0], tc.betas[1]))
    alive = torch.ones(len(cfg.seeds), dtype=torch.bool, device=s.device)  # False once a seed diverged
    loop = Loop(s, TrainResult(s), opt, alive, time.perf_counter() - s.build_seconds)
    eloop.resume(loop, hooks)  # a checkpoint's state put back, when resuming
    steps = choose_steps(s, opt)  # compiled, hand backward or autograd: once, for the whole run
    loop.result.kernel = steps.kernel  # evaluations take the training step's path
    schedule = eloop.Schedule(
        epochs=tc.epochs,
        steps_per_epoch=s.stream.steps_per_epoch(),
        eval_every=cfg.eval.every,
        lr=partial(lr_at, tc.lr, reduction=tc.lr_reduction),
        checkpoint_every=tc.checkpoint_every,
    )
    eloop.run(loop, steps, schedule=schedule, evaluate=partial(_evaluation, loop), seeds=cfg.seeds, hooks=hooks)
    return loop.result


def choose_steps(s: Setup, opt: Optimizer) -> MLPSteps:
    """The run's step strategy (mlp/steps.py), chosen once before the loop; every rule of which step may run is here.

    - compiled: unless train.kernel is torch, where the kernel builds here and applies (ckernel.unsupported: no
      BatchNorm, a compiled activation and loss, float64/float32 on the CPU, plain SGD without momentum or weight
      decay); train.kernel=c where it cannot run is a ConfigError naming why. Blocks of step_block() steps per call,
      one step per call when constraints act between two steps;
    - hand backward: a student without BatchNorm (backprop.supports); plain SGD fused into the backward pass;
    - autograd: every other student.
    """
    cfg, tc, net = s.cfg, s.cfg.train, s.student
    constraints = Constraints.of(cfg, net)
    if tc.kernel != "torch":
        why = ckernel.unsupported(net, tc.loss, tc.optimizer, momentum=tc.momentum, weight_decay=tc.weight_decay)
        if why and tc.kernel == "c":
            raise ConfigError(f"train.kernel: c cannot run here: {why}")
        if not why:
            block = 1 if constraints else step_block(cfg, net)  # constraints act between two steps
            return CompiledSteps(net, s.stream, constraints, compiled=ckernel.CompiledMLP(net, tc.loss), block=block)
    if backprop.supports(net):
        fused = optimizers.plain_sgd(tc.optimizer, tc.momentum, tc.weight_decay)
        return BackwardSteps(net, s.stream, constraints, opt=opt, loss=tc.loss, fused=fused)
    return AutogradSteps(net, s.stream, constraints, opt=opt, loss=tc.loss)


def step_block(cfg: Config, net: Net) -> int:
    """Steps one compiled call runs seed by seed (indexed_steps): up to STEP_BLOCK, fewer where a step is big (a call
    cannot be interrupted, and the progress bar and divergence reports wait for it)."""
    flops = 6 * len(cfg.seeds) * cfg.train.batch_size * sum(w.shape[1] * w.shape[2] for w in net.weights)
    return max(1, min(STEP_BLOCK, int(BLOCK_FLOPS // max(flops, 1))))


def _evaluation(loop: Loop, step: int, epoch: int) -> Evaluation:
    """Every split's evaluation at `step` (_evaluate_all), kept in the result and timed; the on_eval hook's payload."""
    s, result = loop.setup, loop.result
    t0 = time.perf_counter()
    points = _evaluate_all(s, step, result.kernel)
    result.eval_time += time.perf_counter() - t0
    result.evals += points
    ev = points[-1].result
    spec = sum(int((ls.teacher_best > s.cfg.eval.threshold).sum()) for ls in ev.layers)
    total = sum(ls.teacher_best.numel() for ls in ev.layers)
    summary = {"eval_mse": f"{ev.mse[loop.alive].mean().item():.3g}", "specialized": f"{spec}/{total}"}
    return Evaluation(step, epoch, points, summary)
