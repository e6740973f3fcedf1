"""Image inputs for MLPs: data.kind cifar10 / mnist / fashion_mnist (flattened, normalized images) and gaussian_like
(Gaussian inputs with the mean and covariance of an image set's flattened, normalized training images).

An image kind's training set is the first data.n_train training images, its evaluation set the first data.n_eval
test images, the same for every seed (docs/model.md 4.6: the released code's MLPs on `dataset=mnist|cifar10`),
normalized as there (images.STANDARD_NORMALIZATION). With data.augment each seed's training set is randomly cropped
and flipped from its own data generator (again every epoch with data.regenerate). gaussian_like draws every seed's
inputs from its own generator.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ...config import Config, ConfigError
from ...images import (
    READERS,
    STANDARD_NORMALIZATION,
    ImageSet,
    augment,
    channel_stats,
    image_shape,
    load_images,
    normalize,
)
from . import DataKind, register

CHUNK = 4096  # images per float64 block when summing moments


@functools.lru_cache(maxsize=2)
def _loaded(kind: str, root: str | None) -> ImageSet:
    """The image set, read once per process (a sweep's jobs and every seed share it)."""
    return load_images(kind, root)


def _normalization(kind: str, data: ImageSet) -> tuple[list[float], list[float]]:
    return STANDARD_NORMALIZATION.get(kind) or channel_stats(data.train_x)


def flat_images(kind: str, root: str | None, n: int, *, training: bool, g: torch.Generator | None = None) -> Tensor:
    """The first n training (or test) images of `kind`, cropped and flipped from `g` when given, normalized and
    flattened (channel-major, as nn.Flatten): [n, C*H*W] float64."""
    data = _loaded(kind, root)
    pool = data.train_x if training else data.test_x
    if n > pool.shape[0]:
        key, what = ("data.n_train", "training") if training else ("data.n_eval", "test")
        raise ConfigError(f"{key}: {n}, but {kind} has {pool.shape[0]} {what} images")
    x = pool[:n]
    if g is not None:
        x = augment(x, g)
    mean, std = _normalization(kind, data)
    return normalize(x, mean, std, torch.float64).reshape(n, -1)


def _source(cfg: Config) -> str | None:
    """The image set whose images (or moments) a config's MLP inputs come from; None for other kinds."""
    if cfg.data.kind == "gaussian_like":
        if cfg.data.like not in READERS:
            raise ConfigError(
                f"data.like: gaussian_like needs an image set, one of {', '.join(READERS)}; got {cfg.data.like!r}"
            )
        return cfg.data.like
    return cfg.data.kind if cfg.data.kind in READERS else None


def resolve_dims(cfg: Config) -> None:
    """For image inputs, set input_dim to C*H*W of the images (ConfigError naming input_dim when the config gives
    another) and output_dim, when the config leaves it out, to 10 (the released code's d_output); in place."""
    kind = _source(cfg)
    if kind is None:
        return
    c, h, w = image_shape(kind, cfg.data.root)
    d = c * h * w
    if cfg.input_dim != d:
        if "input_dim" in cfg.model_fields_set:
            raise ConfigError(
                f"input_dim: {cfg.input_dim} does not match the {kind} images ({c}x{h}x{w} = {d} inputs); "
                f"leave input_dim out or set it to {d}"
            )
        cfg.input_dim = d
    if "output_dim" not in cfg.model_fields_set:
        cfg.output_dim = 10


def _draw_images(
    g: torch.Generator, n: int, cfg: Config, *, w: Tensor, b: Tensor, training: bool, out: Tensor | None = None
) -> Tensor:
    x = flat_images(cfg.data.kind, cfg.data.root, n, training=training, g=g if training and cfg.data.augment else None)
    if x.shape[1] != cfg.input_dim:  # a Config built in Python, past resolve_dims
        raise ConfigError(f"input_dim: {cfg.input_dim} does not match the {cfg.data.kind} images ({x.shape[1]} inputs)")
    return x


for _name in READERS:
    register(DataKind(name=_name, draw=_draw_images))


@functools.lru_cache(maxsize=2)
def moments(kind: str, root: str | None, n: int) -> tuple[Tensor, Tensor]:
    """Mean [d] and a factor A [d, d] with A A^T = the covariance (divisor n - 1) of the first n flattened,
    normalized training images of `kind`, float64 (A from the eigendecomposition: image covariances are singular)."""
    x = flat_images(kind, root, n, training=True)
    mean = x.mean(0)
    cov = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for i in range(0, n, CHUNK):
        xc = x[i : i + CHUNK] - mean
        cov.addmm_(xc.T, xc)
    cov /= max(n - 1, 1)
    evals, evecs = torch.linalg.eigh(cov)
    return mean, evecs * evals.clamp_min(0.0).sqrt()


def gaussian_like(g: torch.Generator, n: int, cfg: Config) -> Tensor:
    """n samples [n, d] float64 from N(mean, cov) of the image set data.like's first data.n_train training images."""
    like = _source(cfg)
    assert like is not None  # resolve_dims checked data.like
    mean, factor = moments(like, cfg.data.root, cfg.data.n_train)
    if mean.shape[0] != cfg.input_dim:
        raise ConfigError(f"input_dim: {cfg.input_dim} does not match the {like} images ({mean.shape[0]} inputs)")
    z = torch.randn(n, mean.shape[0], generator=g, dtype=torch.float64)
    return torch.addmm(mean, z, factor.T)


GAUSSIAN_LIKE = register(
    DataKind(
        name="gaussian_like",
        draw=lambda g, n, cfg, *, w, b, training, out=None: gaussian_like(g, n, cfg),
    )
)
