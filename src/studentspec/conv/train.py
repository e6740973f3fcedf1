"""Conv students trained on a stored teacher's outputs over real images, and their run directory.

`studentspec run CONFIG` comes here when data.kind is an image set (train.train and
store.write_run hand over). Every seed has its own student init, batch order and augmentation
(generators keyed by (seed, purpose)); the one-member teacher labels each seed's batch. The
student has the teacher's architecture with active widths x student.multi. Evaluation (before
training, every eval.every epochs, at the end) is on the first data.n_eval test images.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import torch

from ..config import Config, ConfigError, check_device, lr_at, steps_per_epoch
from ..ensemble import loop as eloop
from ..ensemble import seeding
from ..ensemble.corr import rho_mean
from ..ensemble.hooks import DEFAULT_HOOKS, Evaluation, Hooks
from ..ensemble.losses import per_seed_loss
from ..ensemble.optim import Optimizer
from ..ensemble.optimizers import full_batch
from ..images import ImageSet, augment, epoch_order, load_images, normalize
from .metrics import ConvEval, evaluate_conv
from .nets import ConvNet, config_net, fanout_norms
from .recipe import gaussian_images, random_teacher
from .teacher import DTYPES, TeacherCheckpoint, file_digest, load_checkpoint


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
    checkpoint_sha256: str | None  # None: a random teacher (conv/recipe.py), drawn at build
    build_seconds: float = 0.0  # counted in the run's wall time
    augment: bool = True  # crop and flip the training batches (data.augment; null: on for a real image set)


@dataclass
class ConvPoint:
    """One evaluation: step, epoch, the evaluation and the student's fan-out norms per layer."""

    step: int
    epoch: int
    result: ConvEval
    student_fanout: list[torch.Tensor]
    train_loss: torch.Tensor | None  # [S] mean batch loss since the previous evaluation


@dataclass
class ConvResult(eloop.RunResult):
    """A finished conv ensemble (ensemble.loop.RunResult)."""

    setup: ConvSetup
    evals: list[ConvPoint] = field(default_factory=list)


def check_architecture(cfg: Config, ckpt: TeacherCheckpoint, path: str) -> None:
    """The config's teacher section and data set must describe the stored teacher; ConfigError names the key."""
    t, net = cfg.teacher, ckpt.net
    affine = bool(net.norms and net.norms[0].weight is not None)
    pairs: list[tuple[str, object, object]] = [
        ("data.kind", cfg.data.kind, ckpt.dataset),
        ("teacher.widths", t.widths, net.widths),
        ("teacher.activation", t.activation, net.activation),
        ("teacher.batchnorm", t.batchnorm, net.batchnorm),
    ]
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
        if cfg.teacher.recipe != "deep":
            raise ConfigError(
                f"teacher.checkpoint: data.kind={cfg.data.kind} needs a trained conv teacher "
                f"(`studentspec teacher train {cfg.data.kind} --out T.pt`), or teacher.recipe: deep for a random one"
            )
        if data is None:
            data = gaussian_images(cfg) if cfg.data.kind == "gaussian" else load_images(cfg.data.kind, cfg.data.root)
        ckpt, data = random_teacher(cfg, data.subset(cfg.data.n_train, cfg.data.n_eval))
        sha256 = None
    else:
        ckpt = load_checkpoint(cfg.teacher.checkpoint)
        check_architecture(cfg, ckpt, cfg.teacher.checkpoint)
        data = data if data is not None else load_images(cfg.data.kind, cfg.data.root)
        if data.shape != ckpt.image_shape:
            raise ConfigError(
                f"data.root: {cfg.data.kind} images {list(data.shape)} do not match the teacher's "
                f"{list(ckpt.image_shape)} ({cfg.teacher.checkpoint})"
            )
        data = data.subset(cfg.data.n_train, cfg.data.n_eval)
        sha256 = file_digest(cfg.teacher.checkpoint)
    dtype, device = DTYPES[cfg.train.dtype], torch.device(cfg.train.device)
    student = config_net(
        seeding.generators(cfg.seeds, "student"),
        ckpt.image_shape,
        student_widths(cfg, ckpt),
        n_classes=ckpt.net.n_classes,
        teacher=cfg.teacher,
        student=cfg.student,
    )
    return ConvSetup(
        cfg,
        ckpt,
        ckpt.net.to(device, dtype),
        student.to(device, dtype).requires_grad_(),
        data,
        device,
        dtype,
        sha256,
        time.perf_counter() - start,
        cfg.data.augment if cfg.data.augment is not None else data.name != "gaussian",
    )


def _lr(cfg: Config, epoch: int) -> float:
    return lr_at(cfg.train.lr, epoch, cfg.train.lr_reduction)  # the MLP trainer's definition (config.lr_at)


def _batches(s: ConvSetup, orders: list[torch.Tensor], augs: list[torch.Generator], i: int) -> torch.Tensor:
    """Batch i of the epoch for every seed, normalized: [B, S, C, H, W]."""
    per_seed = []
    for order, g in zip(orders, augs):
        xb = s.data.train_x[order[i]]
        per_seed.append(augment(xb, g) if s.augment else xb)
    x = torch.stack(per_seed, dim=1).to(s.device)
    return normalize(x, s.ckpt.mean, s.ckpt.std, s.dtype)


@dataclass
class ConvLoop(eloop.Loop):
    """The conv training loop between epochs (ensemble.loop.Loop): what a checkpoint saves (conv/checkpoint.py) and a
    resume restores, with what the conv steps carry across epochs."""

    setup: ConvSetup
    result: ConvResult
    samplers: list[torch.Generator] = field(kw_only=True)  # batch order per seed
    augs: list[torch.Generator] = field(kw_only=True)  # crop and flip per seed
    loss_sum: torch.Tensor = field(kw_only=True)  # [S] training loss summed since the previous evaluation
    loss_n: int = field(default=0, kw_only=True)


def train(s: ConvSetup, hooks: Hooks = DEFAULT_HOOKS) -> ConvResult:
    """Train every seed's conv student on the teacher's outputs (MSE by default), evaluating as configured."""
    cfg, tc = s.cfg, s.cfg.train
    if full_batch(tc.optimizer):
        raise ConfigError(
            f"train.optimizer: {tc.optimizer} (full batch) is not supported for image data; use sgd or adam"
        )
    opt = Optimizer(s.student.parameters(), tc.optimizer, tc.momentum, tc.weight_decay, (tc.betas[0], tc.betas[1]))
    S = len(cfg.seeds)
    alive = torch.ones(S, dtype=torch.bool, device=s.device)
    loop = ConvLoop(
        s,
        ConvResult(s),
        opt,
        alive,
        time.perf_counter() - s.build_seconds,
        samplers=seeding.generators(cfg.seeds, "sampler"),
        augs=seeding.generators(cfg.seeds, "data"),
        loss_sum=torch.zeros(S, dtype=torch.float64, device=s.device),
    )
    eloop.resume(loop, hooks)
    schedule = eloop.Schedule(
        epochs=tc.epochs,
        steps_per_epoch=steps_per_epoch(tc, s.data.train_x.shape[0]),
        eval_every=cfg.eval.every,
        lr=partial(_lr, cfg),
        checkpoint_every=tc.checkpoint_every,
        bar_every=1,
    )  # a conv step is slow: the bar moves at every one
    eloop.run(
        loop, ConvSteps(loop), schedule=schedule, evaluate=partial(_evaluation, loop), seeds=cfg.seeds, hooks=hooks
    )
    return loop.result


class ConvSteps:
    """The conv step (ensemble.loop.Strategy): autograd through every seed's student on its own augmented batch,
    labelled by the teacher, then the optimizer; the loss summed per seed for the next evaluation's train_loss."""

    name = "autograd"

    def __init__(self, loop: ConvLoop) -> None:
        self.loop = loop

    def epoch(self, epoch: int, lr: float, div: eloop.Divergence) -> Iterator[torch.Tensor]:
        """Each step of epoch `epoch` at learning rate `lr`, yielding its per-seed loss [S]."""
        loop = self.loop
        s, opt, kind = loop.setup, loop.opt, loop.setup.cfg.train.loss
        n = s.data.train_x.shape[0]
        batch, spe = min(s.cfg.train.batch_size, n), steps_per_epoch(s.cfg.train, n)
        orders = [epoch_order(g, n, spe, batch) for g in loop.samplers]
        for i in range(spe):
            x = _batches(s, orders, loop.augs, i)
            with torch.no_grad():
                y, _ = s.teacher.forward_shared(x)
            out, _ = s.student.forward(x, training=True)
            loss = per_seed_loss(out, y, kind)
            grads = torch.autograd.grad(loss.sum(), opt.params)
            loss = loss.detach()
            ok = div.check(loss)
            with div.guard(ok, opt):  # a dead seed keeps its parameters and optimizer state
                opt.step(grads if ok else [div.masked(g) for g in grads], lr)
            loop.loss_sum += torch.where(div.alive, loss.double(), 0.0)
            loop.loss_n += 1
            yield loss


def _evaluation(loop: ConvLoop, step: int, epoch: int) -> Evaluation:
    """The evaluation on the test images at `step`, with the mean training loss since the previous one; kept in the
    result, and the on_eval hook's payload."""
    s, cfg = loop.setup, loop.setup.cfg
    ev = evaluate_conv(
        s.teacher,
        s.student,
        s.data.test_x,
        s.data.test_y,
        mean=s.ckpt.mean,
        std=s.ckpt.std,
        loss_kind=cfg.train.loss,
        chunk=cfg.eval.batch_size,
    )
    point = ConvPoint(step, epoch, ev, fanout_norms(s.student), loop.loss_sum / loop.loss_n if loop.loss_n else None)
    loop.loss_sum.zero_()
    loop.loss_n = 0
    loop.result.evals.append(point)
    rho = [f"{float(rho_mean(ls)[loop.alive].mean()):.3f}" for ls in ev.layers]
    summary = {"acc": f"{float(ev.accuracy[loop.alive].mean()):.3f}", "rho": "/".join(rho)}
    return Evaluation(step, epoch, [point], summary)
