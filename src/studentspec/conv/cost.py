"""Cost model of the conv experiments (`reproduce cifar10|images --dry-run`): FLOP counts and steps timed here.

FLOPs: a net's multiply-accumulates (MACs) per image are read off its layers' actual shapes (`layer_macs`): a 3x3
valid convolution C_in x C_out x k x k x H_out x W_out, a BatchNorm one per output element (normalize, scale and
shift fold into one multiply-add), the linear head fan_in x K. A training step costs 6 x MACs per sample (forward 2,
backward 4), a forward (the teacher labelling a student's batch, an evaluation) 2 x MACs; a conv student's
evaluation adds its correlations, 2 x (active teacher channels x student channels) per position, image and seed.

Seconds: small steps are latency-bound, so a step's time is timed, not derived from a peak. `time_steps` runs a
few real training steps (the pipeline's own code: `teacher.fit_labels`, `train.train`) of a net of the stage's
shape on random images of the data set's shape, at the config's dtype, device and threads: first one seed x batch
SMALL_BATCH, then the largest size up to the real one (all seeds x batch, or a power-of-2 fraction of the batch:
one seed's step skips the grouped convolution of several and ran faster per FLOP, BENCHMARKS.md) whose step the
rate timed so far keeps under STEP_BUDGET seconds; each timing the best of REPEATS runs. Seconds per step = a + b x
step FLOPs through the smallest and largest timed size; a real step beyond them is extrapolated on FLOPs, along that
line and at the largest size's rate, and shown as that range (marked extrapolated where the two agree). An
evaluation is timed on one image and on up to a chunk of them (eval.batch_size), a line in images per chunk. Reading
the data set, building nets, checkpoints, run dirs and figures are not projected (seconds at every scale). Timings
are this machine's as it is: other work on its cores slows them (the header gives the load average).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..config import Config, ConfigError, build_config, steps_per_epoch
from ..ensemble import seeding
from ..ensemble.hooks import Hooks
from ..images import READERS, ImageSet, image_shape
from .nets import ConvNet, apply_masks, config_net, n_pruned, prune_masks

STEP_BUDGET = 0.25  # seconds one timed step may take (projected from the small step's rate); larger steps extrapolate
SMALL_BATCH = 8  # the small step's batch (one seed): the per-step overhead end of the line
SPAN = 0.15  # seconds the timed steps (or evaluated images) of one size should last, against timer noise
MAX_TIMED_STEPS = 64
MAX_SIZES = 3  # step sizes timed per net shape
SHAPE_BUDGET = 2.0  # seconds of timing after which no larger size of a net shape is started
REPEATS = 2  # each timing is the best of this many runs
STALL = 3.0  # a convolution this many times slower on all threads than on one: the cores are busy (a note says so)
EVAL_SPAN = 0.2  # seconds of evaluation timed per net (a chunk of images, or part of one)


@dataclass(frozen=True)
class DataShape:
    """What the cost of an image set depends on: one image's shape, the training and test set sizes, the classes."""

    kind: str
    shape: tuple[int, int, int]
    n_train: int
    n_test: int
    n_classes: int = 10


# the sets' published sizes: the dry run needs no data on disk
KNOWN = {
    "cifar10": DataShape("cifar10", (3, 32, 32), 50_000, 10_000),
    "mnist": DataShape("mnist", (1, 28, 28), 60_000, 10_000),
    "fashion_mnist": DataShape("fashion_mnist", (1, 28, 28), 60_000, 10_000),
}


def data_shape(kind: str, root: str | None) -> tuple[DataShape, str]:
    """The image set's shape (an idx header or CIFAR-10's files when they are there, its known shape otherwise) and
    one line saying which; reads no image."""
    if kind not in KNOWN or kind not in READERS:
        raise ConfigError(f"data.kind: {kind!r} has no known shape for the cost model (one of {', '.join(KNOWN)})")
    known = KNOWN[kind]
    c, h, w = known.shape
    sizes = f"{known.n_train:,} training / {known.n_test:,} test images"
    try:
        found = image_shape(kind, root)
    except ConfigError:
        where = f"at {root}" if root is not None else "in its default folder"
        return known, f"data: {kind} not found {where}; projected on its known shape {c}x{h}x{w}, {sizes}"
    data = replace(known, shape=found)
    return data, f"data: {kind} found ({'x'.join(map(str, found))}, {sizes})"


def layer_macs(net: ConvNet, image_hw: int) -> list[tuple[str, int]]:
    """Multiply-accumulates per image and ensemble member of each layer (conv<l>, bn<l>, head), from its tensors."""
    out: list[tuple[str, int]] = []
    side = image_hw
    for l, w in enumerate(net.weights, start=1):
        _, c_out, c_in, kh, kw = (int(v) for v in w.shape)
        side = side - kh + 1  # valid convolution, stride 1 (kh == kw)
        out.append((f"conv{l}", c_in * c_out * kh * kw * side * side))
        if net.batchnorm != "none":
            out.append((f"bn{l}", c_out * side * side))
    _, fan_in, k = (int(v) for v in net.head_w.shape)
    if fan_in != net.widths[-1] * side * side:
        raise ValueError(f"head takes {fan_in} inputs, the last conv layer gives {net.widths[-1] * side * side}")
    out.append(("head", fan_in * k))
    return out


def macs(net: ConvNet, image_hw: int) -> int:
    """Multiply-accumulates of one forward pass per image and ensemble member."""
    return sum(m for _, m in layer_macs(net, image_hw))


def corr_macs(teacher: ConvNet, student: ConvNet, image_hw: int) -> int:
    """MACs per image and seed of a conv evaluation's cross products: every position a sample, active teacher
    channels x student channels per layer."""
    active = [int(m[0].sum()) for m in teacher.active()]
    return sum(a * c * s * s for a, c, s in zip(active, student.widths, teacher.spatial(image_hw)))


# -- timing ------------------------------------------------------------------------------------------------------


def _clock(thunk: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    thunk()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def per_step(prepare: Callable[[int], Callable[[], object]], device: torch.device) -> float:
    """Seconds of one step: `prepare(n)` gives a thunk running n real steps on fresh state (made outside the clock).
    After a warm-up, (time of 1 + k steps - time of 1 step) / k, so what a run does once cancels out; each time the
    best of REPEATS runs, taken in turn (a burst of other work on the cores slows one run, not every one)."""
    warm = _clock(prepare(1), device)
    k = max(2, min(MAX_TIMED_STEPS, math.ceil(SPAN / max(warm, 1e-4))))
    runs: dict[int, list[float]] = {1: [], 1 + k: []}
    for _ in range(REPEATS if warm < STEP_BUDGET else 1):  # a step over the budget: timed once
        for n, times in runs.items():
            times.append(_clock(prepare(n), device))
    one, more = min(runs[1]), min(runs[1 + k])
    step = (more - one) / k
    return step if step > 0 else more / (1 + k)


@dataclass(frozen=True)
class Timed:
    """One timed step size: seeds x batch, its FLOPs and its seconds."""

    seeds: int
    batch: int
    flops: float
    seconds: float


def _line(lo: Timed, hi: Timed) -> tuple[float, float]:
    """(a, b) of seconds = a + b x FLOPs through two timed steps, both >= 0 (one point or a noisy pair: through 0)."""
    if hi.flops <= lo.flops * 1.05 or hi.seconds <= lo.seconds:
        return 0.0, max(lo.seconds, hi.seconds) / max(lo.flops, hi.flops, 1e-30)
    b = (hi.seconds - lo.seconds) / (hi.flops - lo.flops)
    a = lo.seconds - b * lo.flops
    return (a, b) if a >= 0 else (0.0, hi.seconds / hi.flops)


@dataclass(frozen=True)
class StepRate:
    """Seconds per step of one net shape, as a line in step FLOPs through the smallest and largest timed size."""

    timed: tuple[Timed, ...]  # ascending in FLOPs

    def inside(self, flops: float) -> bool:
        """Whether a step of `flops` lies within the timed sizes (no extrapolation)."""
        return self.timed[0].flops * 0.999 <= flops <= self.timed[-1].flops * 1.001

    def seconds(self, flops: float) -> tuple[float, float, float]:
        """(low, projected, high) seconds of a step of `flops`: on the line, and outside the timed sizes also at the
        nearest one's rate (a range; a larger step never takes less than a smaller timed one, nor a smaller more)."""
        lo, hi = self.timed[0], self.timed[-1]
        a, b = _line(lo, hi)
        on = a + b * flops
        if self.inside(flops):
            return on, on, on
        near = hi if flops > hi.flops else lo
        scaled = near.seconds / max(near.flops, 1e-30) * flops
        low, high = min(on, scaled), max(on, scaled)
        if flops > hi.flops:
            low = max(low, hi.seconds)
        else:
            high = min(high, lo.seconds)
        return low, min(max(on, low), high), high

    def describe(self, seeds: int, batch: int) -> str:
        """Where it was timed: the largest size, its rate, and whether the real step was extrapolated."""
        top = self.timed[-1]
        text = f"{top.seconds * 1e3:.1f} ms/step at {top.seeds} seed(s) x batch {top.batch} "
        text += f"({top.flops / max(top.seconds, 1e-12) / 1e9:.2f} GFLOP/s)"
        if (top.seeds, top.batch) != (seeds, batch):
            text += f"; the real step ({seeds} x {batch}) extrapolated on FLOPs"
        return text


def time_steps(
    prepare: Callable[[int, int, int], Callable[[], object]],
    flops: Callable[[int, int], float],
    seeds: int,
    batch: int,
    device: torch.device,
) -> StepRate:
    """Time steps of one net shape: `prepare(seeds, batch, n)` -> a thunk of n real steps, `flops(seeds, batch)`.

    Sizes (seeds, batch), (seeds, batch/2), ... and one seed x SMALL_BATCH: the smallest is timed first,
    then, while the rate timed so far puts a larger size's step under STEP_BUDGET seconds, the largest such size (the
    real one when it fits), MAX_SIZES sizes at most, none started after SHAPE_BUDGET seconds.
    """
    sizes = {(seeds, batch), (1, min(batch, SMALL_BATCH))}
    b = batch
    while b > SMALL_BATCH:  # smaller batches of all the seeds: the grouped convolution the run takes
        b = max(SMALL_BATCH, b // 2)
        sizes.add((seeds, b))
    order = sorted(sizes, key=lambda sb: flops(*sb))

    def timed_at(sb: tuple[int, int]) -> Timed:
        return Timed(*sb, flops(*sb), per_step(lambda n: prepare(*sb, n), device))

    start = time.perf_counter()
    timed = [timed_at(order[0])]
    while len(timed) < MAX_SIZES and time.perf_counter() - start < SHAPE_BUDGET:
        rate = StepRate(tuple(timed))
        fits = [sb for sb in order if flops(*sb) > timed[-1].flops and rate.seconds(flops(*sb))[2] <= STEP_BUDGET]
        if not fits:
            break
        timed.append(timed_at(fits[-1]))
    return StepRate(tuple(timed))


@dataclass(frozen=True)
class EvalRate:
    """Seconds of evaluating a chunk of m images = a + b x m, and the images timed."""

    a: float
    b: float
    timed: int

    def seconds(self, images: int, chunk: int) -> float:
        """One evaluation of `images` images in chunks of `chunk` (the last one partial)."""
        full, rest = divmod(images, chunk)
        return full * (self.a + self.b * chunk) + (self.a + self.b * rest if rest else 0.0)


def time_eval(run: Callable[[int], Callable[[], object]], chunk: int, device: torch.device) -> EvalRate:
    """Time evaluation chunks: `run(m)` -> a thunk evaluating m images. One image, then as many as fill EVAL_SPAN (at
    most a chunk), each after a warm-up at its size (a first call at a new size runs several times slower) and the
    best of REPEATS: the line through the two (a chunk beyond them extrapolated on it)."""
    _clock(run(1), device)
    one = min(_clock(run(1), device) for _ in range(REPEATS))
    m = max(1, min(chunk, int(EVAL_SPAN / max(one, 1e-5))))
    if m == 1:
        return EvalRate(0.0, one, 1)
    _clock(run(m), device)
    more = min(_clock(run(m), device) for _ in range(REPEATS))
    a, b = _line(Timed(1, 1, 1.0, one), Timed(1, m, float(m), more))
    return EvalRate(a, b, m)


# -- the stages of docs/model.md 4.4's protocol --------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline and its projected cost."""

    name: str
    net: str  # channels per layer, as shown
    seeds: int
    epochs: int
    steps: int  # steps of the ensemble (all seeds together)
    batch: int  # samples per step and seed
    step_flops: float  # per step, all seeds
    evals: int
    eval_flops: float  # per evaluation
    seconds: tuple[float, float, float]  # low, projected, high
    extrapolated: bool = False  # a term beyond the timed sizes (the range may still be narrow: shown all the same)

    @property
    def samples(self) -> int:
        """Training samples seen, all seeds."""
        return self.steps * self.batch * self.seeds

    @property
    def gflop(self) -> float:
        """Training and evaluation FLOPs, in units of 1e9."""
        return (self.steps * self.step_flops + self.evals * self.eval_flops) / 1e9


def random_images(data: DataShape, n_train: int, n_test: int, seed: int = 0) -> ImageSet:
    """Random uint8 images of the data set's shape (timing only)."""
    g = seeding.generator(seed, "data")  # the pixels do not matter, only their shape
    c, h, w = data.shape
    k = data.n_classes

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
        return x, torch.randint(0, k, (n,), generator=g, dtype=torch.int64)

    (tx, ty), (ex, ey) = draw(n_train), draw(n_test)
    return ImageSet(data.kind, tx, ty, ex, ey, [str(i) for i in range(k)], "random images (cost model)")


def _device(cfg: Config) -> tuple[torch.device, str]:
    """The device the steps are timed on: train.device when it is here, else the CPU (and a note saying so)."""
    dev = torch.device(cfg.train.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu"), f"train.device {cfg.train.device} is not available here: timed on the CPU"
    if dev.type == "mps" and not torch.backends.mps.is_available():
        return torch.device("cpu"), f"train.device {cfg.train.device} is not available here: timed on the CPU"
    return dev, ""


def _net(cfg: Config, data: DataShape, widths: list[int], gens: list[torch.Generator]) -> ConvNet:
    """A net of the config's teacher architecture with `widths` channels, one member per generator (float64, CPU)."""
    return config_net(gens, data.shape, widths, n_classes=data.n_classes, teacher=cfg.teacher)


def _variant(cfg: Config, *, seeds: int, batch: int, multi: float | None = None) -> Config:
    """The config of a timed run: `seeds` seeds, `batch` samples per step, one epoch, an evaluation after it."""
    tree = cfg.to_dict()
    tree["seeds"] = list(cfg.seeds[:seeds]) if seeds <= len(cfg.seeds) else list(range(1, seeds + 1))
    tree["train"] |= {"batch_size": batch, "epochs": 1, "steps_per_epoch": None, "checkpoint_every": None}
    tree["eval"] |= {"every": 1}
    tree["teacher_train"] |= {"batch_size": batch}
    if multi is not None:
        tree["student"] |= {"multi": multi}
    return build_config(tree)


def _evals_every(epochs: int, every: int) -> int:
    """Evaluations of a run: before training, every `every` epochs and after the last (ensemble/loop.py)."""
    return 1 + sum(1 for e in range(epochs) if (e + 1) % every == 0 or e + 1 == epochs)


@dataclass(frozen=True)
class Projection:
    """A pipeline's stages and what the timing said (one line per timed net)."""

    stages: list[Stage]
    notes: list[str]


def teacher_stages(cfg: Config, data: DataShape, device: torch.device) -> tuple[list[Stage], list[str], ConvNet]:
    """The teacher trained on labels and its pruned copy fine-tuned (conv/teacher.py), and the pruned teacher's net."""
    from .teacher import accuracy, fit_labels

    tt, hw = cfg.teacher_train, data.shape[1]
    dtype = torch.float32 if cfg.train.dtype == "float32" else torch.float64
    mean, std = [0.5] * data.shape[0], [0.25] * data.shape[0]
    n = min(tt.n_train or data.n_train, data.n_train)
    batch = min(tt.batch_size, n)
    spe = math.ceil(n / tt.batch_size)
    augment = cfg.data.augment is not False
    ratios = list(tt.prune_ratios or [0.0] * len(cfg.teacher.widths))

    def teacher(pruned: bool) -> ConvNet:
        net = _net(cfg, data, list(cfg.teacher.widths), [seeding.generator(tt.seed, "teacher")])
        return apply_masks(net, prune_masks(net, ratios)) if pruned else net

    m = macs(teacher(pruned=False), hw)
    chunk = cfg.eval.batch_size
    test = random_images(data, 0, min(data.n_test, chunk))

    def timed(pruned: bool, lr: float) -> tuple[StepRate, EvalRate]:
        """Steps and evaluation chunks of the teacher, or of its pruned copy (masks multiply every layer's output)."""

        def prepare(seeds: int, b: int, steps: int) -> Callable[[], object]:
            fresh = teacher(pruned).to(device, dtype).requires_grad_()
            imgs = random_images(data, b * steps, 1)
            variant = tt.model_copy(update={"batch_size": b})
            return lambda: fit_labels(
                fresh, imgs, mean=mean, std=std, tt=variant, epochs=1, lr=lr, augmentation=augment, progress=False
            )

        rate = time_steps(prepare, lambda s, b: 6.0 * m * b, 1, batch, device)
        net = teacher(pruned).to(device, dtype)

        def run_eval(k: int) -> Callable[[], object]:
            return lambda: accuracy(net, test.test_x[:k], test.test_y[:k], mean=mean, std=std, chunk=chunk)

        return rate, time_eval(run_eval, min(data.n_test, chunk), device)

    def stage(name: str, epochs: int, shown: str, rate: StepRate, ev_rate: EvalRate) -> Stage:
        evals = max(epochs, 1)  # an accuracy on the test set after every epoch (once when there is none)
        lo, mid, hi = rate.seconds(6.0 * m * batch)
        ev = evals * ev_rate.seconds(data.n_test, chunk)
        secs = (epochs * spe * lo + ev, epochs * spe * mid + ev, epochs * spe * hi + ev)
        out = not rate.inside(6.0 * m * batch) or ev_rate.timed < min(chunk, data.n_test)
        return Stage(
            name, shown, 1, epochs, epochs * spe, batch, 6.0 * m * batch, evals, 2.0 * m * data.n_test, secs, out
        )

    widths = ",".join(map(str, cfg.teacher.widths))
    active = ",".join(str(c - n_pruned(r, c)) for r, c in zip(ratios, cfg.teacher.widths))
    stages, notes = [], []
    runs = (("teacher", False, tt.epochs, tt.lr), ("pruned", True, tt.finetune_epochs, tt.finetune_lr))
    for name, pruned, epochs, lr in runs:
        rate, ev_rate = timed(pruned, lr)
        shown = f"{widths} (active {active})" if pruned else widths
        stages.append(stage(name, epochs, shown, rate, ev_rate))
        notes.append(f"timed {name} {shown}: {rate.describe(1, batch)}; accuracy {_per_chunk(ev_rate, chunk)}")
    notes[-1] += " (pruned channels masked, still computed)"
    return stages, notes, teacher(pruned=True)


def student_stage(
    cfg: Config, data: DataShape, multi: float, teacher: ConvNet, device: torch.device
) -> tuple[Stage, str]:
    """One student run of multi `multi` taught by the pruned `teacher` (conv/train.py)."""
    from .metrics import eval_chunk, evaluate_conv
    from .teacher import TeacherCheckpoint
    from .train import ConvSetup, student_widths, train

    dtype = torch.float32 if cfg.train.dtype == "float32" else torch.float64
    hw, S = data.shape[1], len(cfg.seeds)
    mean, std = [0.5] * data.shape[0], [0.25] * data.shape[0]
    ckpt = TeacherCheckpoint(teacher, data.kind, mean, std, data.shape, 0.0)
    cfg_m = _variant(cfg, seeds=S, batch=cfg.train.batch_size, multi=multi)
    widths = student_widths(cfg_m, ckpt)
    n_train, n_eval = min(cfg.data.n_train, data.n_train), min(cfg.data.n_eval, data.n_test)
    batch, spe = min(cfg.train.batch_size, n_train), steps_per_epoch(cfg.train, n_train)
    t_dev = teacher.to(device, dtype)

    def student(seeds: list[int]) -> ConvNet:
        gens = seeding.generators(seeds, "student")
        net = config_net(gens, data.shape, widths, n_classes=data.n_classes, teacher=cfg.teacher, student=cfg.student)
        return net.to(device, dtype)

    probe = student(list(cfg.seeds[:1]))
    m_s, m_t = macs(probe, hw), macs(teacher, hw)
    augment = cfg.data.augment if cfg.data.augment is not None else True

    def setup(seeds: int, b: int, imgs: ImageSet) -> Any:
        variant = _variant(cfg, seeds=seeds, batch=b, multi=multi)
        net = student(list(variant.seeds)).requires_grad_()
        return ConvSetup(variant, ckpt, t_dev, net, imgs, device, dtype, None, 0.0, augment)

    def prepare(seeds: int, b: int, steps: int) -> Callable[[], object]:
        s = setup(seeds, b, random_images(data, b * steps, 1))
        return lambda: train(s, Hooks(progress=False))

    def step_flops(seeds: int, b: int) -> float:
        return seeds * b * (6.0 * m_s + 2.0 * m_t)

    rate = time_steps(prepare, step_flops, S, batch, device)
    ev_student = student(list(cfg.seeds))
    chunk = eval_chunk(t_dev, ev_student, hw, cfg.eval.batch_size)
    test = random_images(data, 0, min(n_eval, chunk))

    def run_eval(k: int) -> Callable[[], object]:
        return lambda: evaluate_conv(
            t_dev,
            ev_student,
            test.test_x[:k],
            test.test_y[:k],
            mean=mean,
            std=std,
            loss_kind=cfg.train.loss,
            chunk=chunk,
        )

    ev_rate = time_eval(run_eval, min(n_eval, chunk), device)
    epochs = cfg.train.epochs
    evals = _evals_every(epochs, cfg.eval.every)
    flops = step_flops(S, batch)
    eval_flops = n_eval * (2.0 * m_t + S * (2.0 * m_s + 2.0 * corr_macs(teacher, probe, hw)))
    lo, mid, hi = rate.seconds(flops)
    ev = evals * ev_rate.seconds(n_eval, chunk)
    steps = epochs * spe
    shown = ",".join(map(str, widths))
    out = not rate.inside(flops) or ev_rate.timed < min(n_eval, chunk)
    secs = (steps * lo + ev, steps * mid + ev, steps * hi + ev)
    stage = Stage(f"multi {multi:g}", shown, S, epochs, steps, batch, flops, evals, eval_flops, secs, out)
    note = (
        f"timed student multi {multi:g} ({shown}): {rate.describe(S, batch)}; evaluation {_per_chunk(ev_rate, chunk)}"
    )
    return stage, note


def stalls(threads: int) -> str:
    """A note when `threads` threads stall on busy cores: a small convolution timed at `threads` and at one thread
    (best of 3 each); empty when the threads help or cost less than STALL times one."""
    if threads <= 1:
        return ""
    g = seeding.generator(0, "data")
    x = torch.randn(32, 8, 30, 30, generator=g, dtype=torch.float32)
    w = torch.randn(8, 8, 3, 3, generator=g, dtype=torch.float32)

    def best(n: int) -> float:
        torch.set_num_threads(n)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(10):
                torch.nn.functional.conv2d(x, w)
            times.append((time.perf_counter() - t0) / 10)
        return min(times)

    try:
        many, one = best(threads), best(1)
    finally:
        torch.set_num_threads(threads)
    if many <= STALL * one:
        return ""
    return (
        f"busy cores: a small convolution took {many * 1e3:.2f} ms at {threads} threads, {one * 1e3:.2f} ms at one; "
        f"multi-threaded timings (and runs) swing widely now; OMP_NUM_THREADS=1 gives steadier ones"
    )


def protocol(cfg: Config, multis: list[float], data: DataShape) -> Projection:
    """docs/model.md 4.4's protocol (conv teacher, pruned teacher, a student per multi) projected on this machine at
    the config's dtype, device (the CPU when it is not here) and threads."""
    device, where = _device(cfg)
    load = f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores" if hasattr(os, "getloadavg") else ""
    previous = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        stall = stalls(torch.get_num_threads()) if device.type == "cpu" else ""
        stages, notes, pruned = teacher_stages(cfg, data, device)
        for multi in multis:
            stage, note = student_stage(cfg, data, multi, pruned, device)
            stages.append(stage)
            notes.append(note)
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    head = f"on {device.type}, {threads} thread(s), {cfg.train.dtype}" + (f" ({where})" if where else "") + load
    return Projection(stages, [head, *notes, stall])


def _per_chunk(rate: EvalRate, chunk: int) -> str:
    """An evaluation rate as shown: seconds per chunk and how it was timed."""
    how = "timed" if rate.timed >= chunk else f"from {rate.timed} image(s) timed"
    return f"{(rate.a + rate.b * chunk) * 1e3:.1f} ms per chunk of {chunk} images ({how})"


def duration(seconds: float) -> str:
    """Seconds as a short human figure: 42 s, 3.5 min, 2.1 h, 3.0 d."""
    if seconds < 120:
        return f"{seconds:.3g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _span(low: float, mid: float, high: float, extrapolated: bool = False) -> str:
    """Projected seconds as shown: with the range where its ends differ as printed, else marked when extrapolated."""
    if high > low * 1.02 and duration(low) != duration(high):
        return f"{duration(mid)} (range {duration(low)} - {duration(high)})"
    return duration(mid) + (" (extrapolated)" if extrapolated or high > low * 1.02 else "")


def table(title: str, stages: list[Stage], notes: list[str]) -> str:
    """The dry run's text: the title, one row per stage, the total, then the notes (one line each)."""
    header = ["stage", "channels", "seeds", "epochs", "steps", "samples", "evals", "GFLOP", "projected"]
    rows = [
        [
            s.name,
            s.net,
            str(s.seeds),
            str(s.epochs),
            f"{s.steps:,}",
            f"{s.samples:,}",
            str(s.evals),
            f"{s.gflop:.4g}",
            _span(*s.seconds, s.extrapolated),
        ]
        for s in stages
    ]
    low, mid, high = (sum(s.seconds[i] for s in stages) for i in range(3))
    total = sum(s.gflop for s in stages)
    steps, samples, evals = (sum(getattr(s, k) for s in stages) for k in ("steps", "samples", "evals"))
    span = _span(low, mid, high, any(s.extrapolated for s in stages))
    rows.append(["total", "", "", "", f"{steps:,}", f"{samples:,}", str(evals), f"{total:.4g}", span])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {2, 3, 4, 5, 6, 7}

    def line(r: list[str]) -> str:
        return "  " + "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))

    return "\n".join([title, line(header).rstrip(), *(line(r).rstrip() for r in rows), *(f"  {n}" for n in notes if n)])
