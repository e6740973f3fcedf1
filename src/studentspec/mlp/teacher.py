"""Teacher construction (docs/model.md 4.1 `two_layer` and 4.3 `deep` recipes) and tuning."""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import Config, ConfigError
from ..ensemble import activations
from ..ensemble.grid import distinct_rows
from .nets import Net, make_batchnorms


def distinct_grid_vectors(g: torch.Generator, count: int, length: int, what: str) -> Tensor:
    """`count` distinct, non-zero vectors of `length` entries from the 9-value grid, [count, length]."""
    if 9**length - 1 < count:  # Python ints: 9.0**length overflows a float once length reaches 324
        raise ConfigError(
            f"teacher.widths: {what} needs {count} distinct "
            f"non-zero vectors of length {length}, only {9**length - 1} exist"
        )
    return distinct_rows(g, count, length)


def _two_layer_seed(cfg: Config, g: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
    """One seed's teacher by docs/model.md 4.1: unit-norm grid rows, fixed bias, decayed fan-out."""
    t = cfg.teacher
    dims = [cfg.input_dim, *t.widths]
    weights, biases = [], []
    for fan_in, width in zip(dims[:-1], dims[1:]):
        rows = distinct_grid_vectors(g, width, fan_in, f"a layer of width {width}")
        rows = rows / rows.norm(dim=1, keepdim=True)
        weights.append(rows.T.contiguous())
        biases.append(torch.full((width,), t.bias, dtype=torch.float64))
    top = t.widths[-1]
    out = distinct_grid_vectors(g, cfg.output_dim, top, f"the output layer ({cfg.output_dim} outputs)").T
    decay = torch.arange(1, top + 1, dtype=torch.float64) ** t.decay
    weights.append((out / decay[:, None]).contiguous())
    biases.append(torch.full((cfg.output_dim,), t.bias, dtype=torch.float64))
    return weights, biases


def _deep_seed(cfg: Config, g: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
    """One seed's teacher by docs/model.md 4.3: grid rows, U(-0.5,0.5) bias, decay, row-normalized."""
    t = cfg.teacher
    dims = [cfg.input_dim, *t.widths, cfg.output_dim]
    weights, biases = [], []
    for l, (fan_in, width) in enumerate(zip(dims[:-1], dims[1:])):
        rows = distinct_grid_vectors(g, width, fan_in, f"layer {l + 1} (width {width})")
        bias = torch.rand(width, generator=g, dtype=torch.float64) - 0.5
        if l > 0:
            rows = rows / (torch.arange(1, fan_in + 1, dtype=torch.float64) ** t.decay)[None, :]
        norm = rows.norm(dim=1)
        weights.append((rows / norm[:, None]).T.contiguous())
        biases.append(bias / norm)
    return weights, biases


def build_teacher(cfg: Config, gens: list[torch.Generator]) -> Net:
    """The untuned ensemble teacher, float64 on CPU, one member per generator."""
    make = _two_layer_seed if cfg.teacher.recipe == "two_layer" else _deep_seed
    per_seed = [make(cfg, g) for g in gens]
    depth = len(per_seed[0][0])
    weights = [torch.stack([p[0][l] for p in per_seed]) for l in range(depth)]
    biases = [torch.stack([p[1][l] for p in per_seed]) for l in range(depth)]
    t = cfg.teacher
    if t.no_bias:  # drawn and dropped: the weights are the same teacher's with biases (teacher.bias is not used)
        biases = [torch.zeros_like(b) for b in biases]
    norms = make_batchnorms(len(gens), t.widths, t.batchnorm_affine, torch.float64) if t.batchnorm != "none" else []
    return Net(weights, biases, t.activation, t.leaky_slope, t.batchnorm, norms)


@torch.no_grad()
def fit_teacher(teacher: Net, x: Tensor, tune: bool) -> Net:
    """Calibrate on inputs x [S, N, d], layer by layer, in place.

    With `tune`: subtract from each hidden bias its median pre-activation (each node active
    ~50%), then standardize every output to mean 0, std 1. BatchNorm statistics, when present,
    are always set from x (a teacher's BatchNorm is a fixed affine map).
    """
    if not tune and teacher.batchnorm == "none":
        return teacher  # nothing to calibrate: skip the forward pass
    act = activations.get(teacher.activation)

    def calibrate(l: int, z: Tensor) -> Tensor:
        if tune:
            med = z.median(dim=1).values
            teacher.biases[l] -= med
            z = z - med[:, None, :]
        if teacher.batchnorm != "none":
            seen = (
                z if teacher.batchnorm == "before" else act.forward(z, teacher.slope)
            )  # what the BatchNorm normalizes
            teacher.norms[l].running_mean.copy_(seen.mean(1))
            teacher.norms[l].running_var.copy_(seen.var(1))
        return z

    out = teacher.trace(x, pre_hook=calibrate).out
    if tune:
        mean, std = out.mean(1), out.std(1).clamp_min(1e-12)
        teacher.weights[-1] /= std[:, None, :]
        teacher.biases[-1].sub_(mean).div_(std)
    return teacher
