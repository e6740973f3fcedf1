"""Inputs, the teacher-aware boundary set (science.md 4.2), and the per-step batch stream."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from ..config import Config, steps_per_epoch
from .nets import Net

CHUNK_ELEMENTS = 2_000_000  # how many input+label numbers one pre-gathered chunk of steps may hold


def draw_inputs(g: torch.Generator, n: int, d: int, std: float, kind: str) -> Tensor:
    """n samples [n, d] float64: N(0, std^2 I), or uniform with the same std (U(-std*sqrt3, std*sqrt3))."""
    if kind == "uniform":
        return (torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1) * (std * math.sqrt(3.0))
    return torch.randn(n, d, generator=g, dtype=torch.float64) * std


def teacher_aware(
    g: torch.Generator,
    w: Tensor,
    b: Tensor,
    n: int,
    std: float,
    exact: bool = False,
    shift_mean: float = 2.0,
    shift_sigma: float = 2.0,
) -> Tensor:
    """The boundary-augmented set of science.md 4.2 for one seed's lowest layer w [d, m], b [m].

    Per teacher node j: ceil(n / 3m) Gaussian points are projected onto j's boundary
    w_j.x + b_j = 0 (in augmented space, then divided by the last coordinate), and kept with
    the two copies x +- a w_j/|w_j|, a ~ U[mean, mean + sigma]. The paper's variant then rescales
    every sample to norm std*sqrt(d), which moves base points slightly off the boundary; with
    `exact` the base points are instead rescaled inside the boundary hyperplane (they stay on
    it) and the +- copies are not rescaled. Returns [3 m ceil(n/3m), d] float64, grouped by node.
    """
    d, m = w.shape
    per_node = math.ceil(n / (3 * m))
    radius = std * math.sqrt(d)
    out = []
    for j in range(m):
        wt = torch.cat([w[:, j], b[j : j + 1]])  # augmented weight
        x = draw_inputs(g, per_node, d, std, "gaussian")
        xt = torch.cat([x, torch.ones(per_node, 1, dtype=x.dtype)], dim=1)
        xt = xt - (xt @ wt)[:, None] * wt[None, :] / wt.dot(wt)
        base = (xt / xt[:, -1:])[:, :d]
        unit = w[:, j] / w[:, j].norm()
        a = shift_mean + shift_sigma * torch.rand(per_node, 1, generator=g, dtype=torch.float64)
        if exact:
            # split base = x0 + u with x0 the boundary point nearest 0 and u inside the plane
            x0 = -b[j] * w[:, j] / w[:, j].dot(w[:, j])
            u = base - x0
            room = max(radius**2 - float(x0.dot(x0)), 0.0)
            base = x0 + u * (math.sqrt(room) / u.norm(dim=1, keepdim=True).clamp_min(1e-300))
            out.append(torch.cat([base, base + a * unit, base - a * unit]))
        else:
            pts = torch.cat([base, base + a * unit, base - a * unit])
            out.append(pts * (radius / pts.norm(dim=1, keepdim=True)))
    return torch.cat(out)


def make_inputs(cfg: Config, teacher: Net, gens: list[torch.Generator], n: int, training: bool) -> Tensor:
    """Inputs [S, n', d] float64 for every seed; the training split honours data.kind."""
    dc = cfg.data
    if training and dc.kind == "teacher_aware":
        w, b = teacher.weights[0], teacher.biases[0]
        return torch.stack(
            [
                teacher_aware(g, w[s], b[s], n, dc.std, dc.boundary_exact, dc.boundary_shift_mean, dc.boundary_shift_sigma)
                for s, g in enumerate(gens)
            ]
        )
    kind = "uniform" if dc.kind == "uniform" else "gaussian"
    return torch.stack([draw_inputs(g, n, cfg.input_dim, dc.std, kind) for g in gens])


class BatchStream:
    """Yields the (x, y) batch of every training step, [S, B, d] and [S, B, C], on the run's device.

    Fixed training set: indices drawn per epoch from each seed's sampler generator (with
    replacement, or shuffled epochs), or the whole set (gd). `online`: fresh inputs every step.
    `data.regenerate`: a new training set every epoch after the first.
    """

    def __init__(self, cfg: Config, teacher: Net, data_gens: list[torch.Generator], sampler_gens: list[torch.Generator], x_train: Tensor, dtype: torch.dtype, device: torch.device):
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
        if cfg.data.regenerate and epoch > 0 and cfg.data.kind != "online":
            self.set_training(make_inputs(cfg, self.teacher, self.data_gens, cfg.data.n_train, training=True))

    def indices(self, epoch: int) -> Tensor | None:
        """Row numbers [steps, S, B] of one epoch's batches in (x_train, y_train); None for online data and gd.

        Use instead of epoch(), not beside it: both draw from the same generators, so
        x_train[s, idx[t, s]] is exactly the batch epoch() would have given at step t.
        """
        if self.cfg.data.kind == "online" or self.cfg.train.optimizer == "gd":
            return None
        self._new_epoch(epoch)
        return self._indices(self.steps_per_epoch(), self.cfg.train.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of one epoch (0-based)."""
        cfg = self.cfg
        self._new_epoch(epoch)
        steps, batch = self.steps_per_epoch(), cfg.train.batch_size
        if cfg.train.optimizer == "gd":
            for _ in range(steps):
                yield self.x_train, self.y_train
            return
        S, d = len(self.data_gens), cfg.input_dim
        chunk = max(1, CHUNK_ELEMENTS // (S * batch * (d + cfg.output_dim)))
        for start in range(0, steps, chunk):
            k = min(chunk, steps - start)
            if cfg.data.kind == "online":
                x = torch.stack([torch.randn(k * batch, d, generator=g, dtype=torch.float64) for g in self.data_gens])
                x = (x * cfg.data.std).to(self.device, self.dtype)
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
    return torch.cat([teacher.forward(x[:, i : i + chunk])[0] for i in range(0, max(x.shape[1], 1), chunk)], dim=1)
