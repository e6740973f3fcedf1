"""MLP input data: the data-kind registry (one module per kind) and the per-step batch stream.

A kind draws one seed's inputs from that seed's generator; the stream turns a fixed training set
(or fresh inputs per step, for a kind that is not `fixed`) into the batches of every step.
"""

from __future__ import annotations

import math
import mmap
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

from ...config import Config, ConfigError, steps_per_epoch
from ...ensemble.optimizers import full_batch
from ...ensemble.registry import Registry
from ..nets import Net

CHUNK_ELEMENTS = 2_000_000  # how many input+label numbers one pre-gathered chunk of steps may hold


@dataclass(frozen=True)
class DataKind:
    """One kind of MLP input data (data.kind)."""

    name: str
    # (generator, n, config, *, w, b: the seed's lowest teacher layer [d, m] and [m], training: training split?, out) ->
    # inputs [n', d] float64; `out` (a preallocated [n', d]
    # slice, or None) may be filled in place and returned, or ignored
    draw: Callable[..., Tensor]
    fixed: bool = True  # a fixed training set; False: fresh inputs every step (no training set, eval set only)


KINDS: Registry[DataKind] = Registry("data kind")
register = KINDS.register


def get(name: str) -> DataKind:
    """The data kind called `name`; ConfigError naming the known ones otherwise."""
    if name not in KINDS:
        raise ConfigError(f"data.kind: {KINDS.one_of()}, got {name!r}")
    return KINDS.get(name)


def train_size(cfg: Config) -> int:
    """Samples in the fixed training set (data.n_train), 0 for kinds that draw fresh inputs every step."""
    return cfg.data.n_train if get(cfg.data.kind).fixed else 0


def small_pages(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialized CPU tensor in an anonymous mapping of its own, on ordinary pages.

    Whatever THP_MEM_ALLOC_ENABLE says: a data set is written once at start-up, and where huge-page faults stall
    for compaction its first touch took 0.7-1.3 s per 256 MB against 0.07 s on ordinary pages (BENCHMARKS.md,
    start-up). The tensor keeps the mapping alive.
    """
    count = math.prod(shape)
    if count == 0:  # e.g. online data's empty training set
        return torch.empty(shape, dtype=dtype)
    buf = mmap.mmap(-1, count * torch.empty((), dtype=dtype).element_size())
    with warnings.catch_warnings():  # frombuffer warns that an mmap is writable; writing it is the point
        warnings.simplefilter("ignore")
        return torch.frombuffer(buf, dtype=dtype, count=count).view(shape)


def make_inputs(cfg: Config, teacher: Net, gens: list[torch.Generator], n: int, *, training: bool) -> Tensor:
    """Inputs [S, n', d] float64 for every seed, drawn by data.kind from each seed's generator.

    Seeds are drawn on torch's threads at once (each from its own generator, so the numbers do not
    depend on the split) straight into their slice of the result: start-up was mostly this.
    """
    kind = get(cfg.data.kind)
    w, b = teacher.weights[0], teacher.biases[0]
    first = kind.draw(gens[0], n, cfg, w=w[0], b=b[0], training=training)
    out = small_pages((len(gens), *first.shape), first.dtype)
    out[0] = first
    del first

    def fill(s: int) -> None:
        got = kind.draw(gens[s], n, cfg, w=w[s], b=b[s], training=training, out=out[s])
        if got.data_ptr() != out[s].data_ptr():  # a kind that builds its own tensor
            out[s] = got

    threads = min(torch.get_num_threads(), len(gens) - 1)
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:  # torch's ops release the GIL
            list(pool.map(fill, range(1, len(gens))))
    else:
        for s in range(1, len(gens)):
            fill(s)
    return out


class BatchStream:
    """Yields the (x, y) batch of every training step, [S, B, d] and [S, B, C], on the run's device.

    Fixed training set: indices drawn per epoch from each seed's sampler generator (with
    replacement, or shuffled epochs), or the whole set (gd). `online`: fresh inputs every step.
    `data.regenerate`: a new training set every epoch after the first.
    """

    def __init__(
        self,
        cfg: Config,
        teacher: Net,
        data_gens: list[torch.Generator],
        sampler_gens: list[torch.Generator],
        x_train: Tensor,
        dtype: torch.dtype,
        device: torch.device,
    ):
        self.cfg, self.teacher = cfg, teacher
        self.data_gens, self.sampler_gens = data_gens, sampler_gens
        self.dtype, self.device = dtype, device
        self.set_training(x_train)

    def set_training(self, x_train: Tensor) -> None:
        """Replace the fixed training set (float64 CPU inputs) and recompute its labels."""
        self.x_train = x_train.to(self.device, self.dtype)
        self.y_train = label(self.teacher, self.x_train)

    def steps_per_epoch(self) -> int:
        """Configured steps, or one pass over the training set when train.steps_per_epoch is null."""
        return steps_per_epoch(self.cfg.train, self.x_train.shape[1])

    def _new_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        if cfg.data.regenerate and epoch > 0 and get(cfg.data.kind).fixed:
            self.set_training(make_inputs(cfg, self.teacher, self.data_gens, cfg.data.n_train, training=True))

    def indices(self, epoch: int) -> Tensor | None:
        """Row numbers [steps, S, B] of one epoch's batches in
        (x_train, y_train); None for online data and full batch (gd).

        Use instead of epoch(), not beside it: both draw from the same generators, so
        x_train[s, idx[t, s]] is exactly the batch epoch() would have given at step t.
        """
        if not get(self.cfg.data.kind).fixed or full_batch(self.cfg.train.optimizer):
            return None
        self._new_epoch(epoch)
        return self._indices(self.steps_per_epoch(), self.cfg.train.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of one epoch (0-based)."""
        cfg = self.cfg
        self._new_epoch(epoch)
        steps, batch = self.steps_per_epoch(), cfg.train.batch_size
        if full_batch(cfg.train.optimizer):
            for _ in range(steps):
                yield self.x_train, self.y_train
            return
        S, d = len(self.data_gens), cfg.input_dim
        chunk = max(1, CHUNK_ELEMENTS // (S * batch * (d + cfg.output_dim)))
        for start in range(0, steps, chunk):
            k = min(chunk, steps - start)
            if not get(cfg.data.kind).fixed:
                w, b = self.teacher.weights[0], self.teacher.biases[0]
                kind = get(cfg.data.kind)
                x = torch.stack(
                    [kind.draw(g, k * batch, cfg, w=w[s], b=b[s], training=True) for s, g in enumerate(self.data_gens)]
                )
                x = x.to(self.device, self.dtype)
                y = label(self.teacher, x)
                x, y = (t.view(S, k, batch, -1).transpose(0, 1).contiguous() for t in (x, y))
            else:
                if start == 0:
                    idx_epoch = self._indices(steps, batch)
                idx = idx_epoch[start : start + k].to(self.device)
                rows = torch.arange(S, device=self.device)[None, :, None]
                x, y = self.x_train[rows, idx], self.y_train[rows, idx]
            yield from zip(x, y)

    def _indices(self, steps: int, batch: int) -> Tensor:
        """Per-seed sample indices of one epoch, [steps, S, B]."""
        n = self.x_train.shape[1]
        per_seed = []
        for g in self.sampler_gens:
            if self.cfg.train.sampling == "replacement":
                per_seed.append(torch.randint(0, n, (steps, batch), generator=g))
            else:
                need = steps * batch
                perms = [torch.randperm(n, generator=g) for _ in range(math.ceil(need / n))]
                per_seed.append(torch.cat(perms)[:need].view(steps, batch))
        return torch.stack(per_seed, dim=1)


@torch.no_grad()
def label(teacher: Net, x: Tensor, chunk: int = 65536) -> Tensor:
    """Teacher outputs for inputs [S, N, d], computed in chunks of samples."""
    parts = [teacher.forward(x[:, i : i + chunk])[0] for i in range(0, max(x.shape[1], 1), chunk)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # one chunk: no copy


# each registers itself; this order is the order config errors list them in
from . import gaussian  # noqa: E402,F401,I001
from . import uniform  # noqa: E402,F401
from . import online  # noqa: E402,F401
from . import teacher_aware  # noqa: E402,F401
from . import images  # noqa: E402,F401
