"""Conv students trained on a stored teacher's outputs over real images, and their run directory.

`studentspec run CONFIG` comes here when data.kind is an image set (train.train and
store.write_run hand over). Every seed has its own student init, batch order and augmentation
(generators keyed by (seed, purpose)); the one-member teacher labels each seed's batch. The
student has the teacher's architecture with active widths x student.multi. Evaluation (before
training, every eval.every epochs, at the end) is on the first data.n_eval test images.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..ensemble import seeding
from ..ensemble.hooks import Hooks
from ..config import Config, ConfigError, check_device, lr_at, steps_per_epoch
from .nets import ConvNet, fanout_norms, init_conv_net
from .metrics import ConvEval, evaluate_conv
from .teacher import DTYPES, TeacherCheckpoint, file_digest, load_checkpoint
from .images import ImageSet, augment, epoch_order, load_images, normalize
from ..ensemble.losses import per_seed_loss
from ..ensemble.corr import COUNT_THRESHOLDS, rho_mean
from ..ensemble.optim import Optimizer, frozen, seed_mask
from ..ensemble.optimizers import full_batch


@dataclass
class ConvSetup:
    """A conv ensemble ready to train: the stored teacher, the data and one student per seed."""

    cfg: Config
    ckpt: TeacherCheckpoint
    teacher: ConvNet  # on the run's device and dtype, S = 1
    student: ConvNet
    data: ImageSet  # training subset (data.n_train) and eval subset (data.n_eval)
    device: torch.device
    dtype: torch.dtype
    checkpoint_sha256: str
    build_seconds: float = 0.0  # counted in the run's wall time


@dataclass
class ConvPoint:
    """One evaluation: step, epoch, the evaluation and the student's fan-out norms per layer."""

    step: int
    epoch: int
    result: ConvEval
    student_fanout: list[torch.Tensor]
    train_loss: torch.Tensor | None  # [S] mean batch loss since the previous evaluation


@dataclass
class ConvResult:
    """A finished conv ensemble."""

    setup: ConvSetup
    evals: list[ConvPoint] = field(default_factory=list)
    diverged: dict[int, int] = field(default_factory=dict)
    steps: int = 0
    wall_time: float = 0.0
    restored: dict[str, Any] = field(default_factory=dict)  # a resumed run's earlier evaluations: table name -> DataFrame
    resumed_from: int | None = None  # the epoch a resumed run's checkpoint was written after


def check_architecture(cfg: Config, ckpt: TeacherCheckpoint, path: str) -> None:
    """The config's teacher section and data set must describe the stored teacher; ConfigError names the key."""
    t, net = cfg.teacher, ckpt.net
    affine = bool(net.norms and net.norms[0].weight is not None)
    pairs = [("data.kind", cfg.data.kind, ckpt.dataset), ("teacher.widths", t.widths, net.widths),
             ("teacher.activation", t.activation, net.activation), ("teacher.batchnorm", t.batchnorm, net.batchnorm)]
    if t.activation == "leaky_relu":
        pairs.append(("teacher.leaky_slope", t.leaky_slope, net.slope))
    if t.batchnorm != "none":
        pairs.append(("teacher.batchnorm_affine", t.batchnorm_affine, affine))
    for key, mine, theirs in pairs:
        if mine != theirs:
            raise ConfigError(f"{key}: {mine!r} does not match the teacher checkpoint {path} ({theirs!r})")


def student_widths(cfg: Config, ckpt: TeacherCheckpoint) -> list[int]:
    """Student channels per layer: round(multi x active teacher channels)."""
    return [max(1, round(cfg.student.multi * a)) for a in ckpt.active_widths]


def build(cfg: Config, data: ImageSet | None = None) -> ConvSetup:
    """Load the teacher checkpoint and the images, and initialize one student per seed."""
    start = time.perf_counter()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    check_device(cfg.train.device)
    if cfg.teacher.checkpoint is None:
        raise ConfigError(f"teacher.checkpoint: data.kind={cfg.data.kind} needs a trained conv teacher "
                          f"(`studentspec teacher train {cfg.data.kind} --out T.pt`)")
    ckpt = load_checkpoint(cfg.teacher.checkpoint)
    check_architecture(cfg, ckpt, cfg.teacher.checkpoint)
    data = data if data is not None else load_images(cfg.data.kind, cfg.data.root)
    if data.shape != ckpt.image_shape:
        raise ConfigError(f"data.root: images {list(data.shape)} do not match the teacher's {list(ckpt.image_shape)}")
    data = data.subset(cfg.data.n_train, cfg.data.n_eval)
    dtype, device = DTYPES[cfg.train.dtype], torch.device(cfg.train.device)
    c, h, _ = ckpt.image_shape
    t, sc = cfg.teacher, cfg.student
    student = init_conv_net(seeding.generators(cfg.seeds, "student"), c, h, student_widths(cfg, ckpt), ckpt.net.n_classes,
                            t.activation, t.leaky_slope, t.batchnorm, t.batchnorm_affine, sc.init_std, sc.init_scale)
    return ConvSetup(cfg, ckpt, ckpt.net.to(device, dtype), student.to(device, dtype).requires_grad_(), data, device, dtype,
                     file_digest(cfg.teacher.checkpoint), time.perf_counter() - start)


def _lr(cfg: Config, epoch: int) -> float:
    return lr_at(cfg.train.lr, epoch, cfg.train.lr_reduction)  # the MLP trainer's definition (config.lr_at)


def _batches(s: ConvSetup, orders: list[torch.Tensor], augs: list[torch.Generator], i: int) -> torch.Tensor:
    """Batch i of the epoch for every seed, normalized: [B, S, C, H, W]."""
    per_seed = []
    for order, g in zip(orders, augs):
        xb = s.data.train_x[order[i]]
        per_seed.append(augment(xb, g) if s.cfg.data.augment else xb)
    x = torch.stack(per_seed, dim=1).to(s.device)
    return normalize(x, s.ckpt.mean, s.ckpt.std, s.dtype)


@dataclass
class ConvLoop:
    """The conv training loop between epochs: what a checkpoint saves (conv/checkpoint.py) and a resume restores."""

    setup: ConvSetup
    result: ConvResult
    opt: Optimizer
    alive: torch.Tensor  # [S] bool
    samplers: list[torch.Generator]  # batch order per seed
    augs: list[torch.Generator]  # crop and flip per seed
    loss_sum: torch.Tensor  # [S] training loss summed since the previous evaluation
    start: float  # perf_counter origin of the wall time (a resume moves it back by the time already spent)
    loss_n: int = 0
    epoch: int = 0  # epochs completed
    step: int = 0


def train(s: ConvSetup, hooks: Hooks = Hooks()) -> ConvResult:
    """Train every seed's conv student on the teacher's outputs (MSE by default), evaluating as configured."""
    cfg = s.cfg
    result = ConvResult(s)
    tc = cfg.train
    if full_batch(tc.optimizer):
        raise ConfigError(f"train.optimizer: {tc.optimizer} (full batch) is not supported for image data; use sgd or adam")
    params = s.student.parameters()
    opt = Optimizer(params, tc.optimizer, tc.momentum, tc.weight_decay, (tc.betas[0], tc.betas[1]))
    n = s.data.train_x.shape[0]
    batch = min(tc.batch_size, n)
    spe = steps_per_epoch(tc, n)
    S = len(cfg.seeds)
    loop = ConvLoop(s, result, opt, torch.ones(S, dtype=torch.bool, device=s.device), seeding.generators(cfg.seeds, "sampler"),
                    seeding.generators(cfg.seeds, "data"), torch.zeros(S, dtype=torch.float64, device=s.device),
                    time.perf_counter() - s.build_seconds)
    if hooks.resume is not None:
        hooks.resume(loop)
    alive, samplers, augs, loss_sum = loop.alive, loop.samplers, loop.augs, loop.loss_sum
    bar = tqdm(total=tc.epochs * spe, initial=loop.step, disable=not hooks.progress, unit="step", dynamic_ncols=True)

    def record(step: int, epoch: int) -> None:
        ev = evaluate_conv(s.teacher, s.student, s.data.test_x, s.data.test_y, s.ckpt.mean, s.ckpt.std, tc.loss, cfg.eval.batch_size)
        point = ConvPoint(step, epoch, ev, fanout_norms(s.student), loss_sum / loop.loss_n if loop.loss_n else None)
        loss_sum.zero_()
        loop.loss_n = 0
        result.evals.append(point)
        if hooks.on_eval is not None:
            hooks.on_eval(point)
        rho = [f"{float(rho_mean(ls)[alive].mean()):.3f}" for ls in ev.layers]
        bar.set_postfix(acc=f"{float(ev.accuracy[alive].mean()):.3f}", rho="/".join(rho), refresh=False)

    if loop.epoch == 0:  # a resumed run's checkpoint holds its earlier evaluations
        record(0, 0)
    step = loop.step
    for epoch in range(loop.epoch, tc.epochs):
        lr = _lr(cfg, epoch)
        orders = [epoch_order(g, n, spe, batch) for g in samplers]
        for i in range(spe):
            x = _batches(s, orders, augs, i)
            with torch.no_grad():
                y, _ = s.teacher.forward_shared(x)
            out, _ = s.student.forward(x, training=True)
            loss = per_seed_loss(out, y, tc.loss)
            grads = torch.autograd.grad(loss.sum(), params)
            finite = torch.isfinite(loss.detach())
            for j in torch.nonzero(alive & ~finite).flatten().tolist():
                result.diverged[cfg.seeds[j]] = step
                tqdm.write(f"seed {cfg.seeds[j]}: loss is not finite at step {step}; this seed is frozen, the others go on")
            alive &= finite
            if bool(alive.all()):
                opt.step(grads, lr)
            else:  # a dead seed keeps its parameters and optimizer state: zero its gradient, undo the rest
                with frozen(alive, opt):
                    opt.step([torch.where(seed_mask(alive, g), g, 0.0) for g in grads], lr)
            loss_sum += torch.where(alive, loss.detach().double(), 0.0)
            loop.loss_n += 1
            step += 1
            bar.update(1)
        if (epoch + 1) % cfg.eval.every == 0 or epoch + 1 == tc.epochs:
            record(step, epoch + 1)
        loop.epoch, loop.step = epoch + 1, step
        if hooks.checkpoint is not None and tc.checkpoint_every and (epoch + 1) % tc.checkpoint_every == 0 and epoch + 1 < tc.epochs:
            hooks.checkpoint(loop)
    bar.close()
    result.steps = step
    result.wall_time = time.perf_counter() - loop.start
    return result
