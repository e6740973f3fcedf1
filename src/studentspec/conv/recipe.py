"""Random conv teachers (the released code's `use_cnn`, docs/model.md 4.6) and the Gaussian images they may read.

`teacher.recipe: deep` on a conv net without `teacher.checkpoint`: every 3x3 filter of every layer (a vector of
C_in x 3 x 3 values) and every row of the head (C_L x H_L x W_L values) is drawn from the deep recipe's 9-value grid,
distinct within its layer, and normalized to unit length; the biases are U(-0.5, 0.5) divided by the same norm.
With `teacher.tune` each channel's bias is then shifted by the median of its pre-activation over the evaluation
images AND positions (each channel active about half the time), layer by layer, and every output standardized to
mean 0, std 1 over the evaluation images. BatchNorm (teacher.batchnorm before or after), when present, is a fixed
affine map whose statistics are set from the evaluation images. The teacher is one net for the whole ensemble, drawn
from the generator of (teacher_train.seed, teacher), like a trained teacher; nothing is trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import Config, ConfigError
from ..ensemble import activations, seeding
from ..ensemble.grid import distinct_rows
from ..images import STANDARD_NORMALIZATION, ImageSet, channel_stats, normalize
from .nets import KERNEL, ConvBatchNorm, ConvNet
from .teacher import TeacherCheckpoint

GAUSSIAN_SHAPE = (1, 16, 16)  # the released code's Gaussian images (dataset: gaussian with use_cnn)
CHUNK = 256  # images per forward chunk while tuning


def gaussian_images(cfg: Config) -> ImageSet:
    """n_train + n_eval Gaussian images 1 x 16 x 16 of std data.std (float64, already standardized), drawn from the
    generator of (teacher_train.seed, data): training images first. Labels are filled in by the teacher (see build)."""
    g = seeding.generator(cfg.teacher_train.seed, "data")
    n, m = cfg.data.n_train, cfg.data.n_eval
    x = torch.randn(n + m, *GAUSSIAN_SHAPE, generator=g, dtype=torch.float64).mul_(cfg.data.std)
    zeros = torch.zeros(n + m, dtype=torch.int64)
    classes = [str(k) for k in range(cfg.output_dim)]
    return ImageSet("gaussian", x[:n], zeros[:n], x[n:], zeros[n:], classes, "gaussian images, data.std")


def _unit_rows(g: torch.Generator, count: int, length: int, what: str) -> tuple[Tensor, Tensor]:
    """`count` distinct grid rows of `length` values, each divided by its norm; and the norms."""
    if 9**length - 1 < count:
        raise ConfigError(f"teacher.widths: {what} needs {count} distinct non-zero grid vectors of length {length}")
    rows = distinct_rows(g, count, length)
    norm = rows.norm(dim=1)
    return rows / norm[:, None], norm


def draw(cfg: Config, shape: tuple[int, int, int]) -> ConvNet:
    """The untuned one-member random conv teacher of cfg.teacher for images of `shape`, float64."""
    t = cfg.teacher
    c, h, _ = shape
    g = seeding.generator(cfg.teacher_train.seed, "teacher")
    weights, biases = [], []
    for l, width in enumerate(t.widths):
        rows, norm = _unit_rows(g, width, c * KERNEL * KERNEL, f"conv layer {l + 1} ({width} filters)")
        bias = torch.rand(width, generator=g, dtype=torch.float64) - 0.5
        weights.append(rows.view(width, c, KERNEL, KERNEL)[None])
        biases.append((bias / norm)[None])
        c = width
    side = h - (KERNEL - 1) * len(t.widths)
    if side < 1:
        raise ConfigError(f"teacher.widths: {len(t.widths)} valid 3x3 conv layers do not fit {h}x{h} images")
    rows, norm = _unit_rows(g, cfg.output_dim, c * side * side, f"the head ({cfg.output_dim} outputs)")
    bias = torch.rand(cfg.output_dim, generator=g, dtype=torch.float64) - 0.5
    norms = []
    if t.batchnorm != "none":  # set from the evaluation images by calibrate(); affine: weight 1, bias 0
        for width in t.widths:
            zeros, ones = torch.zeros(1, width, dtype=torch.float64), torch.ones(1, width, dtype=torch.float64)
            affine = t.batchnorm_affine
            norms.append(
                ConvBatchNorm(zeros, ones, ones.clone() if affine else None, zeros.clone() if affine else None)
            )
    return ConvNet(
        weights,
        biases,
        rows.T.contiguous()[None],
        (bias / norm)[None],
        t.activation,
        t.leaky_slope,
        t.batchnorm,
        norms,
    )


@torch.no_grad()
def calibrate(net: ConvNet, x: Tensor, tune: bool) -> ConvNet:
    """Calibrate on images x [N, C, H, W] (float64), layer by layer, in place.

    With `tune`: shift each channel's bias by its median pre-activation over the images and positions, then
    standardize every output over the images. BatchNorm statistics, when present, are always set from x, per channel
    over images and positions (a teacher's BatchNorm is a fixed affine map), as the MLP teachers' (mlp/teacher.py).
    """
    act = activations.get(net.activation)
    h = x
    for l, (w, b) in enumerate(zip(net.weights, net.biases)):
        z = torch.cat([F.conv2d(h[i : i + CHUNK], w[0], b[0]) for i in range(0, h.shape[0], CHUNK)])
        if tune:
            med = z.transpose(0, 1).reshape(z.shape[1], -1).median(dim=1).values
            b -= med[None]
            z = z - med[None, :, None, None]
        if net.batchnorm == "before":
            z = _set_norm(net, l, z)
        h = act.forward(z, net.slope)
        if net.batchnorm == "after":
            h = _set_norm(net, l, h)
    if not tune:
        return net
    out = h.reshape(h.shape[0], -1) @ net.head_w[0] + net.head_b[0]
    mean, std = out.mean(0), out.std(0).clamp_min(1e-12)
    net.head_w /= std[None, None, :]
    net.head_b.sub_(mean[None]).div_(std[None])
    return net


def _set_norm(net: ConvNet, l: int, v: Tensor) -> Tensor:
    """Layer l's BatchNorm set to the per-channel mean and (unbiased) variance of v [N, C, H, W]; v normalized."""
    flat = v.transpose(0, 1).reshape(v.shape[1], -1)
    bn = net.norms[l]
    bn.running_mean.copy_(flat.mean(1)[None])
    bn.running_var.copy_(flat.var(1)[None])
    return bn(v[:, None], False)[:, 0]


def random_teacher(cfg: Config, data: ImageSet) -> tuple[TeacherCheckpoint, ImageSet]:
    """The random conv teacher of cfg for `data` (tuned on its test images when teacher.tune) as an in-memory
    checkpoint, and the data; Gaussian images get the teacher's argmax as their labels (they have none)."""
    t = cfg.teacher
    if t.no_bias:
        raise ConfigError("teacher.no_bias: not supported for a random conv teacher")
    if data.name == "gaussian":
        mean, std = [0.0], [1.0]  # unused: float images are taken as they are (images.normalize)
    else:
        mean, std = STANDARD_NORMALIZATION.get(data.name) or channel_stats(data.train_x)
    net = draw(cfg, data.shape)

    def inputs(x: Tensor) -> Tensor:
        return normalize(x, mean, std, torch.float64)

    if t.tune or t.batchnorm != "none":
        calibrate(net, inputs(data.test_x), t.tune)

    def argmax(x: Tensor) -> Tensor:
        parts = [net.forward(inputs(x[i : i + CHUNK])[:, None])[0][0].argmax(1) for i in range(0, x.shape[0], CHUNK)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)

    if data.name == "gaussian":
        data = ImageSet(
            data.name, data.train_x, argmax(data.train_x), data.test_x, argmax(data.test_x), data.classes, data.source
        )
    with torch.no_grad():
        acc = float((argmax(data.test_x) == data.test_y).double().mean()) if data.test_x.shape[0] else 0.0
    ckpt = TeacherCheckpoint(net, data.name, list(mean), list(std), data.shape, acc)
    return ckpt, data
