"""Ensemble conv nets: 3x3 valid convolutions, ReLU / Leaky ReLU, optional BatchNorm, linear head.

Activations use the "grouped" layout [N, S, C, H, W]: N images, S ensemble members. Conv layer
l of all seeds is one grouped convolution: the input viewed as [N, S*C_in, H, W], the weights
[S, C_out, C_in, 3, 3] viewed as [S*C_out, C_in, 3, 3], groups=S. BatchNorm of all seeds is one
F.batch_norm over the S*C channels. The head maps the flattened last layer (channel-major, as
nn.Flatten) [S, N, C*H*W] to [S, N, K] with ensemble.batched.baddbmm.

A mask [S, C] per hidden layer (pruned teacher channels are False) multiplies the channel's
output, after the activation and again after a BatchNorm that follows it, so a masked channel
is exactly 0 everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ensemble import activations
from ..ensemble.batched import BN_EPS, BN_MOMENTUM, baddbmm

if TYPE_CHECKING:
    from ..config import StudentConfig, TeacherConfig

KERNEL = 3


@dataclass
class ConvBatchNorm:
    """BatchNorm2d per seed and channel: running stats [S, C], optional affine weight/bias [S, C]."""

    running_mean: Tensor
    running_var: Tensor
    weight: Tensor | None = None
    bias: Tensor | None = None

    def __call__(self, h: Tensor, training: bool) -> Tensor:
        """Normalize grouped activations [N, S, C, H, W]; in training, update the running stats in place."""
        n, s, c, hh, ww = h.shape
        w = None if self.weight is None else self.weight.reshape(-1)
        b = None if self.bias is None else self.bias.reshape(-1)
        # the [S*C] views share storage with [S, C], so F.batch_norm's in-place update lands there
        out = F.batch_norm(
            h.reshape(n, s * c, hh, ww),
            self.running_mean.view(-1),
            self.running_var.view(-1),
            w,
            b,
            training,
            BN_MOMENTUM,
            BN_EPS,
        )
        return out.view(n, s, c, hh, ww)


@dataclass
class ConvNet:
    """An ensemble of S conv nets of identical shape (a teacher is usually S = 1)."""

    weights: list[Tensor]  # [S, C_out, C_in, 3, 3] per conv layer
    biases: list[Tensor]  # [S, C_out]
    head_w: Tensor  # [S, C_L * H_L * W_L, K]
    head_b: Tensor  # [S, K]
    activation: str = "relu"
    slope: float = 0.1
    batchnorm: str = "none"  # none | before | after (the activation)
    norms: list[ConvBatchNorm] = field(default_factory=list)
    masks: list[Tensor] | None = None  # per hidden layer [S, C] bool; None = every channel active

    @property
    def widths(self) -> list[int]:
        """Channels per conv layer, bottom to top."""
        return [int(w.shape[1]) for w in self.weights]

    @property
    def n_seeds(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weights[0].shape[2])

    @property
    def n_classes(self) -> int:
        return int(self.head_w.shape[2])

    def parameters(self) -> list[Tensor]:
        """Trainable tensors: conv weights and biases, head weight and bias, then BatchNorm affine params."""
        out = [t for pair in zip(self.weights, self.biases) for t in pair] + [self.head_w, self.head_b]
        for bn in self.norms:
            if bn.weight is not None and bn.bias is not None:
                out += [bn.weight, bn.bias]
        return out

    def active(self) -> list[Tensor]:
        """Per hidden layer, the active-channel mask [S, C] (all True when unmasked)."""
        if self.masks is not None:
            return self.masks
        return [torch.ones(self.n_seeds, c, dtype=torch.bool, device=self.head_w.device) for c in self.widths]

    def forward(self, x: Tensor, training: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Inputs [N, S, C, H, W] -> outputs [S, N, K] and each layer's post-activation output [N, S, C_l, H_l, W_l]."""
        n, s = x.shape[:2]
        h = x
        hidden = []
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            c_in, hh, ww = h.shape[2:]
            c_out = w.shape[1]
            z = F.conv2d(
                h.reshape(n, s * c_in, hh, ww), w.reshape(s * c_out, c_in, KERNEL, KERNEL), b.reshape(-1), groups=s
            )
            z = z.view(n, s, c_out, *z.shape[2:])
            mask = None if self.masks is None else self.masks[l].to(z.dtype)[None, :, :, None, None]
            if self.batchnorm == "before":
                z = self.norms[l](z, training)
            h = activations.get(self.activation).forward(z, self.slope)
            if mask is not None:
                h = h * mask
            hidden.append(h)
            if self.batchnorm == "after":
                h = self.norms[l](h, training)
                if mask is not None:
                    h = h * mask
        flat = h.reshape(n, s, -1).transpose(0, 1)
        return baddbmm(self.head_b[:, None, :], flat, self.head_w), hidden

    def forward_shared(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """A one-member net (a teacher) on per-seed inputs [N, S,
        C, H, W]: outputs [S, N, K], hidden [N, S, C_l, H_l, W_l].

        The S input streams are folded into the image axis, so BatchNorm must be in eval mode.
        """
        if self.n_seeds != 1:
            raise ValueError("forward_shared needs a one-member net")
        n, s = x.shape[:2]
        out, hidden = self.forward(x.reshape(n * s, 1, *x.shape[2:]))
        return out.view(n, s, -1).transpose(0, 1), [h.view(n, s, *h.shape[2:]) for h in hidden]

    def spatial(self, image_hw: int) -> list[int]:
        """Side length of each conv layer's output for square images of side image_hw (valid 3x3 convs)."""
        return [image_hw - (KERNEL - 1) * (l + 1) for l in range(len(self.weights))]

    def fanout(self, layer: int) -> Tensor:
        """Fan-out weights of conv layer `layer` (1-based) grouped per channel: [S, C_layer, k] (k weights each)."""
        c = self.widths[layer - 1]
        if layer < len(self.weights):
            w = self.weights[layer]  # [S, C_next, C_layer, 3, 3]
            return w.transpose(1, 2).reshape(w.shape[0], c, -1)
        s, f, k = self.head_w.shape
        return self.head_w.reshape(s, c, (f // c) * k)

    def map(self, fn: Callable[[Tensor], Tensor]) -> ConvNet:
        """A new ConvNet with `fn` applied to every tensor (masks are copied as they are)."""

        def opt(t: Tensor | None) -> Tensor | None:
            return None if t is None else fn(t)

        norms = [
            ConvBatchNorm(fn(bn.running_mean), fn(bn.running_var), opt(bn.weight), opt(bn.bias)) for bn in self.norms
        ]
        masks = None if self.masks is None else [m.clone() for m in self.masks]
        return ConvNet(
            [fn(w) for w in self.weights],
            [fn(b) for b in self.biases],
            fn(self.head_w),
            fn(self.head_b),
            self.activation,
            self.slope,
            self.batchnorm,
            norms,
            masks,
        )

    def to(self, device: torch.device | str, dtype: torch.dtype) -> ConvNet:
        """A detached copy with every float tensor on `device` in `dtype`."""
        net = self.map(lambda t: t.detach().to(device=device, dtype=dtype).clone())
        if net.masks is not None:
            net.masks = [m.to(device) for m in net.masks]
        return net

    def requires_grad_(self) -> ConvNet:
        """Mark every trainable tensor as requiring gradients (in place); returns self."""
        for p in self.parameters():
            p.requires_grad_(True)
        return self


def fanout_importance(net: ConvNet, layer: int) -> Tensor:
    """Mean |fan-out weight| of each channel of conv layer `layer` (1-based), [S, C]: the pruning score."""
    return net.fanout(layer).detach().abs().mean(dim=2)


def fanout_norms(net: ConvNet) -> list[Tensor]:
    """Per conv layer, the L2 norm of each channel's fan-out weights, [S, C_l] float64."""
    return [net.fanout(l).detach().double().norm(dim=2) for l in range(1, len(net.weights) + 1)]


def n_pruned(ratio: float, channels: int) -> int:
    """Channels removed for a ratio: floor(ratio * C), so 64 channels at 0.3/0.5/0.7 keep 45/32/20."""
    return int(math.floor(ratio * channels + 1e-9))


def prune_masks(net: ConvNet, ratios: list[float]) -> list[Tensor]:
    """Masks [S, C] per layer dropping the n_pruned(ratio, C) channels with the smallest mean |fan-out weight|.

    Ties go to the lower channel index being kept (a stable sort); already masked channels are
    scored 0, so they stay pruned.
    """
    if len(ratios) != len(net.weights):
        raise ValueError(f"{len(ratios)} prune ratios for {len(net.weights)} conv layers")
    masks = []
    for l, r in enumerate(ratios, start=1):
        score = fanout_importance(net, l) * net.active()[l - 1]
        k = n_pruned(r, score.shape[1])
        order = torch.sort(score, dim=1, stable=True).indices
        drop = order[:, :k]
        m = torch.ones_like(score, dtype=torch.bool)
        m.scatter_(1, drop, False)
        masks.append(m & net.active()[l - 1])  # a channel pruned before stays pruned whatever this ratio
    return masks


@torch.no_grad()
def apply_masks(net: ConvNet, masks: list[Tensor]) -> ConvNet:
    """Set `net.masks` and zero every weight into and out of a masked channel (in place); returns net."""
    net.masks = [m.clone().bool() for m in masks]
    for l, m in enumerate(net.masks):
        off = ~m  # [S, C]
        net.weights[l].masked_fill_(off[:, :, None, None, None], 0.0)
        net.biases[l].masked_fill_(off, 0.0)
        if l + 1 < len(net.weights):
            net.weights[l + 1].masked_fill_(off[:, None, :, None, None], 0.0)
        else:  # head rows are channel-major: channel c owns rows c*H*W .. (c+1)*H*W - 1
            s, c = off.shape
            net.head_w.view(s, c, -1).masked_fill_(off[:, :, None], 0.0)
    return net


def init_conv_net(
    gens: list[torch.Generator],
    in_channels: int,
    image_hw: int,
    widths: list[int],
    *,
    n_classes: int,
    activation: str = "relu",
    slope: float = 0.1,
    batchnorm: str = "none",
    affine: bool = False,
    init_std: float | None = None,
    init_scale: float = 1.0,
) -> ConvNet:
    """One net per generator: PyTorch's default Conv2d/Linear init (U(+-1/sqrt(fan_in)) weights and biases),
    or N(0, init_std^2) weights with zero biases; everything times init_scale. float64 on the CPU."""
    side = image_hw - (KERNEL - 1) * len(widths)
    if side < 1:
        raise ValueError(f"{len(widths)} valid 3x3 convolutions do not fit {image_hw}x{image_hw} images")
    shapes = [(c_out, c_in, KERNEL, KERNEL) for c_in, c_out in zip([in_channels, *widths[:-1]], widths)]
    feat = widths[-1] * side * side
    weights: list[list[Tensor]] = [[] for _ in shapes]
    biases: list[list[Tensor]] = [[] for _ in shapes]
    head_w, head_b = [], []

    def draw(g: torch.Generator, shape: tuple[int, ...], fan_in: int) -> tuple[Tensor, Tensor]:
        if init_std is not None:
            return torch.randn(shape, generator=g, dtype=torch.float64) * init_std, torch.zeros(
                shape[0], dtype=torch.float64
            )
        bound = 1.0 / math.sqrt(fan_in)
        w = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * bound
        return w, (torch.rand(shape[0], generator=g, dtype=torch.float64) * 2 - 1) * bound

    for g in gens:
        for l, shape in enumerate(shapes):
            w, b = draw(g, shape, shape[1] * KERNEL * KERNEL)
            weights[l].append(w * init_scale)
            biases[l].append(b * init_scale)
        w, b = draw(g, (n_classes, feat), feat)  # nn.Linear layout [out, in]
        head_w.append(w.T * init_scale)
        head_b.append(b * init_scale)
    S = len(gens)
    norms = []
    if batchnorm != "none":
        for c in widths:
            z, o = torch.zeros(S, c, dtype=torch.float64), torch.ones(S, c, dtype=torch.float64)
            norms.append(
                ConvBatchNorm(z.clone(), o.clone(), o.clone() if affine else None, z.clone() if affine else None)
            )
    return ConvNet(
        [torch.stack(w) for w in weights],
        [torch.stack(b) for b in biases],
        torch.stack(head_w),
        torch.stack(head_b),
        activation,
        slope,
        batchnorm,
        norms,
    )


def config_net(
    gens: list[torch.Generator],
    image_shape: tuple[int, int, int],
    widths: list[int],
    *,
    n_classes: int,
    teacher: TeacherConfig,
    student: StudentConfig | None = None,
) -> ConvNet:
    """init_conv_net with the teacher config's activation and BatchNorm; with `student`, the student's init."""
    c, h, _ = image_shape
    return init_conv_net(
        gens,
        c,
        h,
        widths,
        n_classes=n_classes,
        activation=teacher.activation,
        slope=teacher.leaky_slope,
        batchnorm=teacher.batchnorm,
        affine=teacher.batchnorm_affine,
        init_std=student.init_std if student is not None else None,
        init_scale=student.init_scale if student is not None else 1.0,
    )
