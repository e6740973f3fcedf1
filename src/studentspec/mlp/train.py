"""The ensemble trainer: every seed of a config in one batched computation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import backprop, kernel as ckernel, metrics
from ..ensemble import seeding
from ..config import Config, ConfigError, check_device
from ..ensemble.hooks import Hooks
from .data import BatchStream, label, make_inputs, train_size
from ..ensemble.losses import output_grad, per_seed_loss
from .memory import CACHE_BYTES, check_fits
from .evaluate import SplitEval, evaluate, fanout_norms, teacher_hidden
from .nets import Net, make_batchnorms
from ..ensemble.optim import Optimizer, frozen, seed_mask
from .teacher import build_teacher, fit_teacher

DTYPES = {"float32": torch.float32, "float64": torch.float64}


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
    build_seconds: float = 0.0  # counted in the run's wall time


def init_student(cfg: Config, gens: list[torch.Generator], dtype: torch.dtype, device: torch.device) -> Net:
    """Student weights N(0, init_std^2) with zero biases, or PyTorch's Linear default, times init_scale."""
    sc = cfg.student
    dims = [cfg.input_dim, *cfg.student_widths, cfg.output_dim]
    weights: list[list[Tensor]] = [[] for _ in dims[1:]]
    biases: list[list[Tensor]] = [[] for _ in dims[1:]]
    for g in gens:
        for l, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            if sc.init_std is not None:
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
    net = Net([torch.stack(w) for w in weights], [torch.stack(b) for b in biases], t.activation, t.leaky_slope, t.batchnorm, norms)
    net = net.to(device, dtype)
    for p in net.parameters():
        p.requires_grad_(True)
    return net


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
    student = init_student(cfg, seeding.generators(cfg.seeds, "student"), dtype, device)
    return Setup(cfg, teacher, teacher_run, student, stream, x_eval, label(teacher_run, x_eval), dtype, device,
                 build_seconds=time.perf_counter() - start)


def lr_at(lr: float | dict[int, float], epoch: int) -> float:
    """The learning rate of an epoch: a constant, or the last schedule entry at or before it."""
    if isinstance(lr, dict):
        return lr[max(k for k in lr if k <= epoch)]
    return lr


@dataclass
class EvalPoint:
    """Metrics of one evaluation: step, split ('train'/'eval'), values, gradient norms [S, L]."""

    step: int
    split: str
    result: SplitEval
    grad_norm: Tensor | None
    student_fanout: list[Tensor]  # per hidden layer, [S, n_l]
    extra: dict[str, Any] = field(default_factory=dict)  # registered metrics (mlp/metrics.py): name -> value


@dataclass
class TrainResult:
    """A finished ensemble: its setup (with trained student), every evaluation, divergences."""

    setup: Setup
    evals: list[EvalPoint] = field(default_factory=list)
    diverged: dict[int, int] = field(default_factory=dict)  # seed -> step its loss went non-finite
    steps: int = 0
    wall_time: float = 0.0
    kernel: str = "torch"  # which training step ran: "c" (ckernel) or "torch"
    eval_time: float = 0.0  # seconds of wall_time spent evaluating


def _evaluate_all(s: Setup, step: int, kernel: str) -> list[EvalPoint]:
    """Every split's evaluation at `step`, on the path the training step takes (`kernel`: c or torch)."""
    cfg = s.cfg
    splits = [("eval", s.x_eval, s.y_eval)]
    if train_size(cfg):
        splits.insert(0, ("train", s.stream.x_train, s.stream.y_train))
    points = []
    for name, x, y in splits:
        cached = s.teacher_cache.get(name)
        acts = cached[1] if cached is not None and cached[0] is x else teacher_hidden(s.teacher_run, x, cfg.eval.batch_size, CACHE_BYTES)
        if acts is not None:
            s.teacher_cache[name] = (x, acts)
        res = evaluate(s.teacher_run, s.student, x, y, cfg.train.loss, cfg.eval.batch_size, with_grad=cfg.eval.grad_norm and name == "train",
                       kernel=kernel, teacher_acts=acts)
        points.append(EvalPoint(step, name, res, res.grad_norm, fanout_norms(s.student)))
    for metric in metrics.enabled(cfg):
        points[0].extra[metric.name] = metric.measure(s, points)
    return points


def train(s: Setup, hooks: Hooks = Hooks()) -> TrainResult:
    """Train every seed of a built ensemble in one batched pass, evaluating before training and every eval.every epochs."""
    cfg = s.cfg
    start = time.perf_counter() - s.build_seconds
    result = TrainResult(s)
    params = s.student.parameters()
    tc = cfg.train
    opt = Optimizer(params, tc.optimizer, tc.momentum, tc.weight_decay, (tc.betas[0], tc.betas[1]))
    steps_per_epoch = s.stream.steps_per_epoch()
    alive = torch.ones(len(cfg.seeds), dtype=torch.bool, device=s.device)
    bar = tqdm(total=tc.epochs * steps_per_epoch, disable=not hooks.progress, unit="step", dynamic_ncols=True)
    postfix: dict[str, str] = {}

    def record(step: int) -> None:
        t0 = time.perf_counter()
        points = _evaluate_all(s, step, result.kernel)
        result.eval_time += time.perf_counter() - t0
        result.evals += points
        if hooks.on_eval is not None:
            hooks.on_eval(points)
        ev = points[-1].result
        spec = sum(int((ls.teacher_best > cfg.eval.threshold).sum()) for ls in ev.layers)
        total = sum(ls.teacher_best.numel() for ls in ev.layers)
        postfix.update(eval_mse=f"{ev.mse[alive].mean().item():.3g}", specialized=f"{spec}/{total}")
        bar.set_postfix(postfix, refresh=False)

    manual = backprop.supports(s.student)
    fused = manual and tc.optimizer in ("sgd", "gd") and not tc.momentum and not tc.weight_decay
    compiled = _compiled_step(cfg, s.student)
    result.kernel = "c" if compiled is not None else "torch"
    record(0)
    step = 0
    for epoch in range(tc.epochs):
        lr = lr_at(tc.lr, epoch)
        for item in s.stream.epoch(epoch) if compiled is None else _compiled_epoch(s, compiled, epoch, lr, alive):
            if compiled is not None:  # the step ran; it skipped dead seeds and left a seed with a non-finite loss as it was
                loss = item
                _check(result, cfg.seeds, alive, loss, step)
            elif manual:
                x, y = item
                with torch.no_grad():
                    trace = s.student.trace(x)
                    loss, g = output_grad(trace.out, y, tc.loss)
                    ok = _check(result, cfg.seeds, alive, loss, step)
                    with nullcontext() if ok else frozen(alive, opt):
                        g = g if ok else torch.where(seed_mask(alive, g), g, 0.0)
                        grads = backprop.backward(s.student, trace.inputs, trace.pre, g, sgd_lr=lr if fused else None)
                        if grads:
                            opt.step(grads, lr)
            else:
                x, y = item
                out, _ = s.student.forward(x, training=True)
                loss = per_seed_loss(out, y, tc.loss)
                grads = list(torch.autograd.grad(loss.sum(), params))
                ok = _check(result, cfg.seeds, alive, loss.detach(), step)
                with nullcontext() if ok else frozen(alive, opt):
                    opt.step(grads if ok else [torch.where(seed_mask(alive, gr), gr, 0.0) for gr in grads], lr)
            step += 1
            if step % 100 == 0 and hooks.progress:
                bar.update(100)
                bar.set_postfix(postfix | {"loss": f"{loss[alive].mean().item():.3g}"}, refresh=False)
        if (epoch + 1) % cfg.eval.every == 0 or epoch + 1 == tc.epochs:
            record(step)
    bar.update(step - bar.n)
    bar.close()
    result.steps = step
    result.wall_time = time.perf_counter() - start
    return result


def _compiled_step(cfg: Config, net: Net) -> ckernel.CompiledMLP | None:
    """The compiled SGD step where train.kernel allows it and it applies; ConfigError if `c` was asked for and cannot run."""
    tc = cfg.train
    if tc.kernel == "torch":
        return None
    why = ckernel.unsupported(net, tc.loss, tc.optimizer, tc.momentum, tc.weight_decay)
    if why and tc.kernel == "c":
        raise ConfigError(f"train.kernel: c cannot run here: {why}")
    return None if why else ckernel.CompiledMLP(net, tc.loss)


def _compiled_epoch(s: Setup, compiled: ckernel.CompiledMLP, epoch: int, lr: float, alive: Tensor) -> Iterator[Tensor]:
    """One epoch of compiled steps, yielding each step's per-seed loss; batches of a fixed set are gathered in the kernel."""
    idx_epoch = s.stream.indices(epoch)
    if idx_epoch is None:
        for x, y in s.stream.epoch(epoch):
            yield compiled(x, y, lr, alive)
        return
    x, y = s.stream.x_train.contiguous(), s.stream.y_train.contiguous()
    compiled.check_indices(idx_epoch, x.shape[1])
    for idx in idx_epoch:
        yield compiled.indexed(x, y, idx, lr, alive)


def _check(result: TrainResult, seeds: list[int], alive: Tensor, loss: Tensor, step: int) -> bool:
    """True while every seed is healthy; a seed whose loss is non-finite is marked dead (once)."""
    finite = torch.isfinite(loss)
    if bool(finite.all()) and not result.diverged:
        return True
    for i in torch.nonzero(alive & ~finite).flatten().tolist():
        result.diverged[seeds[i]] = step
        tqdm.write(f"seed {seeds[i]}: loss is not finite at step {step}; this seed is frozen, the others go on")
    alive &= finite
    return False
