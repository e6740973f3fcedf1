"""Streaming Pearson correlation between teacher and student
nodes, and what is read off it (docs/model.md section 2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .batched import baddbmm

COUNT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


class CorrAccumulator:
    """Pearson correlation [S, teacher, student] from chunks of samples, accumulated in float64.

    Sums are taken around the first chunk's mean, which keeps them well conditioned; a node with
    zero variance (dead, or constant) gets correlation 0.
    """

    def __init__(self) -> None:
        self.n = 0
        self._buf: Tensor | None = None

    def update(self, t: Tensor, s: Tensor) -> None:
        """Add a chunk: teacher outputs t [S, b, m], student outputs s [S, b, n] (same samples)."""
        t, s = t.detach().double(), s.detach().double()
        if self.n == 0:
            self.shift_t, self.shift_s = t.mean(1, keepdim=True), s.mean(1, keepdim=True)
            self.sum_t = torch.zeros_like(self.shift_t[:, 0])
            self.sum_s = torch.zeros_like(self.shift_s[:, 0])
            self.sq_t, self.sq_s = self.sum_t.clone(), self.sum_s.clone()
            self.cross = torch.zeros(t.shape[0], t.shape[2], s.shape[2], dtype=torch.float64, device=t.device)
        # s - shift into a buffer kept across chunks (a fresh [S, b, n] tensor per chunk cost more in page faults
        # than the arithmetic), squared in place below; elementwise, so the same bits as plain `s - shift`
        if self._buf is None or self._buf.shape != s.shape:
            self._buf = torch.empty_like(s)
        t, s = t - self.shift_t, torch.sub(s, self.shift_s, out=self._buf)
        self.n += t.shape[1]
        self.sum_t += t.sum(1)
        self.sum_s += s.sum(1)
        self.sq_t += t.square().sum(1)
        self.cross = baddbmm(self.cross, t.transpose(1, 2), s)
        self.sq_s += s.square_().sum(1)

    def variances(self) -> tuple[Tensor, Tensor]:
        """Population variances of teacher [S, m] and student [S, n] nodes."""
        var_t = (self.sq_t - self.sum_t.square() / self.n) / self.n
        var_s = (self.sq_s - self.sum_s.square() / self.n) / self.n
        return var_t.clamp_min(0), var_s.clamp_min(0)

    def corr(self) -> Tensor:
        """The correlation matrix [S, m, n]."""
        cov = (self.cross - self.sum_t[:, :, None] * self.sum_s[:, None, :] / self.n) / self.n
        var_t, var_s = self.variances()
        denom = torch.sqrt(var_t[:, :, None] * var_s[:, None, :])
        ok = (var_t[:, :, None] > 0) & (var_s[:, None, :] > 0) & torch.isfinite(cov)
        return torch.where(ok, cov / torch.where(ok, denom, 1.0), 0.0).clamp(-1.0, 1.0)


@dataclass
class LayerStats:
    """Specialization statistics of one hidden layer, every tensor with leading seed axis."""

    corr: Tensor  # [S, m, n]
    teacher_best: Tensor  # [S, m] max_k corr
    teacher_best_student: Tensor  # [S, m]
    teacher_counts: Tensor  # [S, m, len(COUNT_THRESHOLDS)] students above each threshold
    teacher_active: Tensor  # [S, m] non-zero variance on this split
    student_best: Tensor  # [S, n] max_j corr
    student_best_teacher: Tensor  # [S, n]


def layer_stats(corr: Tensor, teacher_active: Tensor) -> LayerStats:
    """Best matches and threshold counts from a correlation matrix [S, m, n]."""
    tb, tk = corr.max(dim=2)
    sb, sj = corr.max(dim=1)
    thr = torch.tensor(COUNT_THRESHOLDS, dtype=corr.dtype, device=corr.device)
    counts = (corr[..., None] > thr).sum(dim=2)
    return LayerStats(corr, tb, tk, counts, teacher_active, sb, sj)


def rho_mean(stats: LayerStats) -> Tensor:
    """Mean over active teacher nodes of the best correlation, per seed [S]."""
    act = stats.teacher_active.to(stats.teacher_best.dtype)
    return (stats.teacher_best * act).sum(1) / act.sum(1).clamp_min(1)
