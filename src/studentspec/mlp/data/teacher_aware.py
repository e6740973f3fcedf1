"""data.kind teacher_aware: the boundary-augmented training set of docs/model.md 4.2 (evaluation on a Gaussian set)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...config import Config
from . import DataKind, register
from .gaussian import gaussian


def teacher_aware(
    g: torch.Generator,
    w: Tensor,
    b: Tensor,
    n: int,
    *,
    std: float,
    exact: bool = False,
    shift_mean: float = 2.0,
    shift_sigma: float = 2.0,
) -> Tensor:
    """The boundary-augmented set of docs/model.md 4.2 for one seed's lowest layer w [d, m], b [m].

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
        x = gaussian(g, per_node, d, std)
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


def draw(
    g: torch.Generator, n: int, cfg: Config, *, w: Tensor, b: Tensor, training: bool, out: Tensor | None = None
) -> Tensor:
    """The boundary set around the seed's lowest teacher layer for training, Gaussian inputs for evaluation."""
    dc = cfg.data
    if not training:
        return gaussian(g, n, cfg.input_dim, dc.std, out=out)
    return teacher_aware(
        g,
        w,
        b,
        n,
        std=dc.std,
        exact=dc.boundary_exact,
        shift_mean=dc.boundary_shift_mean,
        shift_sigma=dc.boundary_shift_sigma,
    )


TEACHER_AWARE = register(DataKind(name="teacher_aware", draw=draw))
