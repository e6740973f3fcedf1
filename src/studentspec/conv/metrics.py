"""Specialization metrics of conv layers: every spatial position of every image is a sample.

A layer's activations [N, S, C, H, W] become N*H*W samples x C channels. They are streamed
through metrics.CorrAccumulator image chunk by image chunk (and in row slices within a chunk),
so the eval set's activations are never held at once. Only the teacher's active channels
enter the correlation matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..ensemble.corr import CorrAccumulator, LayerStats, layer_stats
from ..ensemble.losses import per_seed_loss
from ..images import normalize
from .nets import ConvNet

ROWS = 1 << 15  # samples per accumulator update: bounds the float64 copies to ROWS x channels x S
ACTIVATIONS = 1 << 25  # at most this many activation numbers per evaluated image chunk (teacher + students)


def eval_chunk(teacher: ConvNet, student: ConvNet, image_hw: int, requested: int) -> int:
    """Images per evaluation chunk: eval.batch_size, lowered so one chunk's activations stay under ACTIVATIONS."""
    sides = teacher.spatial(image_hw)
    per_image = sum(
        (c_t + student.n_seeds * c_s) * side * side for c_t, c_s, side in zip(teacher.widths, student.widths, sides)
    )
    return max(1, min(requested, ACTIVATIONS // max(per_image, 1)))


def positions(h: Tensor) -> Tensor:
    """Grouped activations [N, S, C, H, W] -> samples [S, N*H*W, C] (image-major, then row, then column)."""
    n, s, c, hh, ww = h.shape
    return h.permute(1, 0, 3, 4, 2).reshape(s, n * hh * ww, c)


def update_conv(acc: CorrAccumulator, t: Tensor, s: Tensor, rows: int = ROWS) -> None:
    """Add one chunk of teacher [N, St, m, H, W] (St = 1 or S) and student [N, S, n, H, W] activations."""
    tp, sp = positions(t), positions(s)
    if tp.shape[0] != sp.shape[0]:
        tp = tp.expand(sp.shape[0], -1, -1)
    for i in range(0, sp.shape[1], rows):
        acc.update(tp[:, i : i + rows], sp[:, i : i + rows])


@dataclass
class ConvEval:
    """One evaluation of a conv student against its teacher on a labelled image set."""

    mse: Tensor  # [S] mean over images and outputs of (student - teacher)^2
    loss: Tensor  # [S] the training objective
    accuracy: Tensor  # [S] student argmax == true label
    agreement: Tensor  # [S] student argmax == teacher argmax
    teacher_accuracy: float
    layers: list[LayerStats]  # over active teacher channels only
    active: list[Tensor]  # per layer, indices of the teacher's active channels (rows of `layers[l].corr`)


@torch.no_grad()
def evaluate_conv(
    teacher: ConvNet,
    student: ConvNet,
    images: Tensor,
    labels: Tensor,
    *,
    mean: list[float],
    std: list[float],
    loss_kind: str = "mse",
    chunk: int = 100,
) -> ConvEval:
    """Outputs, accuracies and per-layer correlations over uint8 images [N, C, H, W] (BatchNorm in eval mode).

    Every seed sees the same images; the one-member teacher runs once per chunk.
    """
    dev = student.head_w.device
    dtype = student.head_w.dtype
    S = student.n_seeds
    chunk = eval_chunk(teacher, student, images.shape[-1], chunk)
    active = [torch.nonzero(m[0]).flatten() for m in teacher.active()]
    accs = [CorrAccumulator() for _ in active]
    sq = torch.zeros(S, dtype=torch.float64, device=dev)
    loss = torch.zeros_like(sq)
    hits = torch.zeros_like(sq)
    agree = torch.zeros_like(sq)
    t_hits = 0
    n = images.shape[0]
    for i in range(0, n, chunk):
        x = normalize(images[i : i + chunk].to(dev), mean, std, dtype)
        y_true = labels[i : i + chunk].to(dev)
        t_out, t_hidden = teacher.forward(x[:, None])
        s_out, s_hidden = student.forward(x[:, None].expand(-1, S, -1, -1, -1))
        for acc, th, sh, idx in zip(accs, t_hidden, s_hidden, active):
            update_conv(acc, th.index_select(2, idx), sh)
        y = t_out.expand(S, -1, -1)
        sq += (s_out - y).double().square().sum(dim=(1, 2))
        loss += per_seed_loss(s_out, y, loss_kind).double() * x.shape[0]
        pred = s_out.argmax(dim=2)
        hits += (pred == y_true[None]).sum(1).double()
        agree += (pred == t_out.argmax(dim=2)).sum(1).double()
        t_hits += int((t_out[0].argmax(dim=1) == y_true).sum())
    layers = [layer_stats(acc.corr(), acc.variances()[0] > 0) for acc in accs]
    k = teacher.n_classes
    return ConvEval(sq / (n * k), loss / n, hits / n, agree / n, t_hits / n, layers, active)
