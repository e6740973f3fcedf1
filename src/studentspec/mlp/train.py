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

from . import backprop, kernel as ckernel
from ..ensemble import seeding
from ..config import Config, ConfigError, check_device, lr_at  # lr_at: one definition for the MLP and conv trainers
from ..ensemble.batched import bmm
from ..ensemble.hooks import Hooks
from .data import BatchStream, label, make_inputs, train_size
from ..ensemble.losses import output_grad, per_seed_loss
from .memory import CACHE_BYTES, check_fits
from .evaluate import SplitEval, evaluate, fanout_norms, teacher_hidden
from .metrics import Context, EvalMetric
from .nets import Net, make_batchnorms
from ..ensemble.optim import Optimizer, frozen, seed_mask
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


def init_student(cfg: Config, gens: list[torch.Generator], dtype: torch.dtype, device: torch.device, teacher: Net | None = None) -> Net:
    """Student weights N(0, init_std^2) with zero biases, or PyTorch's Linear default, times init_scale;
    or the teacher plus noise (student.perturb); then the init knobs of docs/model.md 4.5 (_init_knobs)."""
    sc = cfg.student
    needs = [k for k, on in (("student.perturb", sc.perturb is not None), ("student.same_dir", sc.same_dir),
                             ("student.same_sign", sc.same_sign), ("student.adv_init", sc.adv_init != "none")) if on]
    if needs and teacher is None:
        raise ConfigError(f"{needs[0]}: the student is initialized from the teacher, which this command does not build")
    dims = [cfg.input_dim, *cfg.student_widths, cfg.output_dim]
    weights: list[list[Tensor]] = [[] for _ in dims[1:]]
    biases: list[list[Tensor]] = [[] for _ in dims[1:]]
    for s, g in enumerate(gens):
        for l, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            if sc.perturb is not None and teacher is not None:  # the original's set_teacher: noise from the student's generator
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
    """The init knobs of docs/model.md 4.5 on the stacked float64 student [S, ...], in place, in the original code's order:
    same_dir, same_sign (after perturb, in init_student), adv_init; then no_bias and normalize as the training keeps them.

    Norms and inner products are taken one seed at a time, so a seed's init does not depend on the ensemble size.
    """
    sc = cfg.student
    if teacher is not None and sc.same_dir:  # set_same_dir: r = ||W_l|| / ||W*_l|| (Frobenius, weights only); (W_l, b_l) := r (W*_l, b*_l)
        for l, (tw, tb) in enumerate(zip(teacher.weights, teacher.biases)):
            r = torch.stack([weights[l][s].norm() / tw[s].norm() for s in range(tw.shape[0])])
            weights[l], biases[l] = tw * r[:, None, None], tb * r[:, None]
    if teacher is not None and sc.same_sign:  # set_same_sign: flip each weight and bias whose sign is opposite to the teacher's
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


def unit_columns(w: Tensor) -> Tensor:
    """w [S, n_in, n_out] with every column w[s, :, k] divided by its L2 norm (student.normalize).

    The squared norms come from a per-seed matmul with a row of ones (ensemble.batched.bmm): the same bits for a seed
    whatever the ensemble size, unlike a sum that torch may split across threads by the tensor's shape. Each column
    is first divided by its largest |entry| (a max is exact in any order), so huge weights of a diverging seed cannot
    overflow the squares to inf and come out as silent zeros; an all-zero column gives NaN, which the divergence check sees.
    """
    ones = torch.ones(w.shape[0], 1, w.shape[1], dtype=w.dtype, device=w.device)
    scaled = w / w.abs().amax(dim=1, keepdim=True)
    return scaled / bmm(ones, scaled * scaled).sqrt()


@dataclass
class Constraints:
    """What the original code's knobs impose after every step (docs/model.md 4.5), on every path (compiled or torch).

    Frozen layers (train.freeze) go back to their initial values, bit for bit: SGD computes every layer's update from
    the weights before the step, so this equals never updating them. Hidden weight columns go back to unit norm
    (student.normalize), biases to 0 (teacher.no_bias). A seed frozen for divergence is left as it is.
    """

    frozen: list[tuple[int, Tensor, Tensor]]  # (0-based layer, its W, its b as they were before the first step)
    normalize: list[int]  # 0-based hidden layers whose columns are rescaled (frozen ones are restored instead)
    no_bias: bool

    @classmethod
    def of(cls, cfg: Config, net: Net) -> "Constraints":
        """The constraints of cfg's knobs on the student `net`, its present values taken as the frozen ones."""
        idx = sorted(l - 1 for l in cfg.train.freeze)
        frozen = [(l, net.weights[l].detach().clone(), net.biases[l].detach().clone()) for l in idx]
        hidden = [l for l in range(len(net.weights) - 1) if l not in idx] if cfg.student.normalize else []
        return cls(frozen, hidden, cfg.teacher.no_bias)

    def __bool__(self) -> bool:
        return bool(self.frozen or self.normalize or self.no_bias)

    @torch.no_grad()
    def apply(self, net: Net, alive: Tensor) -> None:
        """Impose the constraints on `net` in place after a step; seeds not `alive` keep their parameters."""
        for l in self.normalize:
            w = net.weights[l]
            w.copy_(torch.where(seed_mask(alive, w), unit_columns(w), w))
        if self.no_bias:  # a dead seed's biases are 0 already: it kept the values of its last (constrained) step
            for b in net.biases:
                b.zero_()
        for l, w0, b0 in self.frozen:
            net.weights[l].copy_(w0)
            net.biases[l].copy_(b0)


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
    student = init_student(cfg, seeding.generators(cfg.seeds, "student"), dtype, device, teacher)
    return Setup(cfg, teacher, teacher_run, student, stream, x_eval, label(teacher_run, x_eval), dtype, device,
                 build_seconds=time.perf_counter() - start)


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
class TrainResult:
    """A finished ensemble: its setup (with trained student), every evaluation, divergences."""

    setup: Setup
    evals: list[EvalPoint] = field(default_factory=list)
    diverged: dict[int, int] = field(default_factory=dict)  # seed -> step its loss went non-finite
    steps: int = 0
    wall_time: float = 0.0
    kernel: str = "torch"  # which training step ran: "c" (ckernel) or "torch"
    eval_time: float = 0.0  # seconds of wall_time spent evaluating
    restored: dict[str, Any] = field(default_factory=dict)  # a resumed run's earlier evaluations: table name -> DataFrame
    resumed_from: int | None = None  # the epoch a resumed run's checkpoint was written after


@dataclass
class Loop:
    """The training loop between epochs: what a checkpoint saves (mlp/checkpoint.py) and a resume restores."""

    setup: Setup
    result: TrainResult
    opt: Optimizer
    alive: Tensor  # [S] bool, False once a seed diverged
    start: float  # perf_counter origin of the run's wall time (a resume moves it back by the time already spent)
    epoch: int = 0  # epochs completed
    step: int = 0


def _evaluate_all(s: Setup, step: int, kernel: str) -> list[EvalPoint]:
    """Every split's evaluation at `step`, on the path the training step takes (`kernel`: c or torch)."""
    cfg = s.cfg
    splits = [("eval", s.x_eval, s.y_eval)]
    if train_size(cfg):
        splits.insert(0, ("train", s.stream.x_train, s.stream.y_train))
    dtype = DTYPES[cfg.eval.dtype or cfg.train.dtype]
    teacher, student = (s.teacher_run, s.student) if dtype == s.dtype else (s.teacher_run.to(s.device, dtype), s.student.to(s.device, dtype))
    points = []
    inputs = {name: (x, y) for name, x, y in splits}  # the run's dtype, as metrics see them
    for name, x, y in splits:
        if dtype != s.dtype:  # eval.dtype: the split rounded once to the evaluation's precision, kept while the split is the same
            copies = s.eval_copies.get(name)
            if copies is None or copies[0] is not x:
                copies = s.eval_copies[name] = (x, x.to(dtype), y.to(dtype))
            x, y = copies[1], copies[2]
        cached = s.teacher_cache.get(name)
        acts = cached[1] if cached is not None and cached[0] is x else teacher_hidden(teacher, x, cfg.eval.batch_size, CACHE_BYTES)
        if acts is not None:
            s.teacher_cache[name] = (x, acts)
        res = evaluate(teacher, student, x, y, cfg.train.loss, cfg.eval.batch_size, with_grad=cfg.eval.grad_norm and name == "train",
                       kernel=kernel, teacher_acts=acts)
        points.append(EvalPoint(step, name, res, res.grad_norm, fanout_norms(s.student)))
    if s.metrics:
        ctx = Context(cfg, s.teacher, s.teacher_run, s.student, step, {p.split: p.result for p in points}, inputs)
        for metric in s.metrics:
            points[0].extra[metric.name] = metric.measure(ctx)
    return points


def train(s: Setup, hooks: Hooks = Hooks()) -> TrainResult:
    """Train every seed of a built ensemble in one batched pass, evaluating before training and every eval.every epochs."""
    cfg = s.cfg
    result = TrainResult(s)
    params = s.student.parameters()
    tc = cfg.train
    opt = Optimizer(params, tc.optimizer, tc.momentum, tc.weight_decay, (tc.betas[0], tc.betas[1]))
    alive = torch.ones(len(cfg.seeds), dtype=torch.bool, device=s.device)
    loop = Loop(s, result, opt, alive, time.perf_counter() - s.build_seconds)
    if hooks.resume is not None:
        hooks.resume(loop)
    steps_per_epoch = s.stream.steps_per_epoch()
    bar = tqdm(total=tc.epochs * steps_per_epoch, initial=loop.step, disable=not hooks.progress, unit="step", dynamic_ncols=True)
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
    constraints = Constraints.of(cfg, s.student)
    block = 1 if constraints else step_block(cfg, s.student)  # constraints act between two steps
    result.kernel = "c" if compiled is not None else "torch"
    if loop.epoch == 0:  # a resumed run's checkpoint holds its earlier evaluations
        record(0)
    step = loop.step
    for epoch in range(loop.epoch, tc.epochs):
        lr = lr_at(tc.lr, epoch, tc.lr_reduction)
        for item in s.stream.epoch(epoch) if compiled is None else _compiled_epoch(s, compiled, epoch, lr, alive, block):
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
            if constraints:
                constraints.apply(s.student, alive)
            step += 1
            if step % 100 == 0 and hooks.progress:
                bar.update(100)
                bar.set_postfix(postfix | {"loss": f"{loss[alive].mean().item():.3g}"}, refresh=False)
        if (epoch + 1) % cfg.eval.every == 0 or epoch + 1 == tc.epochs:
            record(step)
        loop.epoch, loop.step = epoch + 1, step
        if hooks.checkpoint is not None and tc.checkpoint_every and (epoch + 1) % tc.checkpoint_every == 0 and epoch + 1 < tc.epochs:
            hooks.checkpoint(loop)
    bar.update(step - bar.n)
    bar.close()
    result.steps = step
    result.wall_time = time.perf_counter() - loop.start
    return result


def _compiled_step(cfg: Config, net: Net) -> ckernel.CompiledMLP | None:
    """The compiled SGD step where train.kernel allows it and it applies; ConfigError if `c` was asked for and cannot run."""
    tc = cfg.train
    if tc.kernel == "torch":
        return None
    why = ckernel.unsupported(net, tc.loss, tc.optimizer, momentum=tc.momentum, weight_decay=tc.weight_decay)
    if why and tc.kernel == "c":
        raise ConfigError(f"train.kernel: c cannot run here: {why}")
    return None if why else ckernel.CompiledMLP(net, tc.loss)


def step_block(cfg: Config, net: Net) -> int:
    """Steps one compiled call runs seed by seed (indexed_steps): up to STEP_BLOCK, fewer where a step is big (a call
    cannot be interrupted, and the progress bar and divergence reports wait for it)."""
    flops = 6 * len(cfg.seeds) * cfg.train.batch_size * sum(w.shape[1] * w.shape[2] for w in net.weights)
    return max(1, min(STEP_BLOCK, int(BLOCK_FLOPS // max(flops, 1))))


def _compiled_epoch(s: Setup, compiled: ckernel.CompiledMLP, epoch: int, lr: float, alive: Tensor, block: int) -> Iterator[Tensor]:
    """One epoch of compiled steps, yielding each step's per-seed loss; batches of a fixed set are gathered in the kernel,
    `block` steps per call (the train loop marks diverged seeds dead between calls; inside one, the kernel stops them)."""
    idx_epoch = s.stream.indices(epoch)
    if idx_epoch is None:
        for x, y in s.stream.epoch(epoch):
            yield compiled(x, y, lr, alive)
        return
    x, y = s.stream.x_train.contiguous(), s.stream.y_train.contiguous()
    compiled.check_indices(idx_epoch, x.shape[1])
    for t0 in range(0, len(idx_epoch), block):
        yield from compiled.indexed_steps(x, y, idx_epoch[t0 : t0 + block], lr, alive)


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
