"""Weight-space order parameters of MLP runs (eval.order): R, Q, T of the augmented weights, stored as order.parquet.

Node k of hidden layer l has the augmented weight w~_k = [W_l[:, k]; b_l[k]] (docs/model.md section 1,
`Net.augmented`). At every evaluation this metric stores, per seed:
  R[k, j] = w~_k . w~*_j   student k against teacher j, lowest hidden layer only (only there do
                           teacher and student weights live in one space, the augmented input [x; 1];
                           a higher layer's inputs are each net's own hidden nodes);
  Q[k, k'] = w~_k . w~_k'  student against student, every hidden layer, upper triangle k <= k';
  T[j, j'] = w~*_j . w~*_j' teacher against teacher, every hidden layer, upper triangle, once (the
                           teacher is fixed) at the first evaluation's step (0).
`inner` is the plain inner product (no 1/d: divide by input_dim + 1 for the literature's
normalisation), `cosine` = inner / (||w~_a|| ||w~_b||), 0 where a norm is 0, clipped to [-1, 1].
The student is read at each evaluation, the teacher from the stored float64 copy; products are
computed in float64 on the CPU with ensemble.batched.bmm, so a seed's rows do not depend on the
ensemble it ran in. BatchNorm parameters are not part of w~. Declared as METRIC (mlp/metrics.py): its switch,
its table and schema, its memory per evaluation and its figure (paper/order_figures.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..config import Config
from ..ensemble.batched import bmm
from .metrics import Context, EvalMetric, Figure, Table
from .nets import Net

TABLE = "order"
SCHEMA = {
    "seed": "integer",
    "step": "integer",
    "layer": "integer",
    "kind": "text",
    "i": "integer",
    "j": "integer",
    "cosine": "number",
    "inner": "number",
}
COLUMNS = tuple(SCHEMA)
ROW_BYTES = 8 + 8 + 4 + 8 + 4 + 4 + 8 + 8  # seed, step, layer, kind (an object pointer), i, j, cosine, inner


def _augmented(net: Net) -> list[Tensor]:
    """Every hidden layer's augmented weights [S, fan_in + 1, width], float64 on the CPU (copies)."""
    return [net.augmented(l).detach().to("cpu", torch.float64) for l in range(1, len(net.weights))]


def gram(a: Tensor, b: Tensor) -> Tensor:
    """Per-seed inner products of the columns of a [S, D, n] and b [S, D, m]: [S, n, m]."""
    return bmm(a.transpose(1, 2).contiguous(), b.contiguous())


def measure(ctx: Context) -> list[dict[str, np.ndarray]]:
    """Per hidden layer, this evaluation's raw inner products: 'Q' [S, n, n] and, on layer 1, 'R' [S, n, m]."""
    student = _augmented(ctx.student)
    out = [{"Q": gram(w, w).numpy()} for w in student]
    out[0]["R"] = gram(student[0], ctx.teacher.augmented(1).detach().to("cpu", torch.float64)).numpy()
    return out


def _cosine(inner: np.ndarray, norm_a: np.ndarray, norm_b: np.ndarray) -> np.ndarray:
    """inner [S, n, m] / (norm_a [S, n] x norm_b [S, m]); 0 where a norm is 0 (a zero weight has no direction)."""
    den = norm_a[:, :, None] * norm_b[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(den == 0, 0.0, inner / np.where(den == 0, 1.0, den))  # NaN weights stay NaN
    return np.clip(cos, -1.0, 1.0)


def _norms(g: np.ndarray) -> np.ndarray:
    """Column norms [S, n] from a Gram matrix [S, n, n] (its diagonal; rounding can make it -0)."""
    return np.sqrt(np.maximum(np.diagonal(g, axis1=1, axis2=2), 0.0))


def _rows(
    seeds: np.ndarray, step: int, layer: int, kind: str, inner: np.ndarray, cos: np.ndarray, upper: bool
) -> dict[str, np.ndarray]:
    """Long-format columns of one [S, a, b] block (only i <= j when `upper`), seed-major."""
    S, a, b = inner.shape
    i, j = np.triu_indices(a) if upper else (np.repeat(np.arange(a), b), np.tile(np.arange(b), a))
    k = len(i)
    return {
        "seed": np.repeat(seeds, k),
        "step": np.full(S * k, step, dtype=np.int64),
        "layer": np.full(S * k, layer, dtype=np.int32),
        "kind": np.full(S * k, kind, dtype=object),
        "i": np.tile(i, S).astype(np.int32),
        "j": np.tile(j, S).astype(np.int32),
        "cosine": cos[:, i, j].ravel(),
        "inner": inner[:, i, j].ravel(),
    }


def table(
    cfg: Config,
    teacher_net: Net,
    measured: list[tuple[int, list[dict[str, np.ndarray]]]],
    earlier: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """order.parquet: T of every hidden layer at the first evaluation's step, then per evaluation and layer R (layer 1)
    and Q; a resumed run's `earlier` rows (T included) come first."""
    seeds = np.asarray(cfg.seeds, dtype=np.int64)
    teacher = _augmented(teacher_net)
    t_gram = [gram(w, w).numpy() for w in teacher]
    t_norm = [_norms(g) for g in t_gram]
    parts = (
        []
        if earlier is not None or not measured
        else [
            _rows(seeds, measured[0][0], l, "T", g, _cosine(g, n, n), True)
            for l, (g, n) in enumerate(zip(t_gram, t_norm), start=1)
        ]
    )
    for step, layers in measured:
        for l, value in enumerate(layers, start=1):
            q = value["Q"]
            s_norm = _norms(q)
            if "R" in value:
                parts.append(_rows(seeds, step, l, "R", value["R"], _cosine(value["R"], s_norm, t_norm[l - 1]), False))
            parts.append(_rows(seeds, step, l, "Q", q, _cosine(q, s_norm, s_norm), True))
    if not parts:
        return earlier.copy() if earlier is not None else pd.DataFrame({c: [] for c in COLUMNS})
    new = pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in COLUMNS})
    return new if earlier is None else pd.concat([earlier, new], ignore_index=True)


def bytes_per_eval(cfg: Config) -> int:
    """What one evaluation adds until the run is recorded: the raw R and Q blocks (float64), then their rows twice
    (the parts and the concatenated table). T, written once per run, is left out: a floor, as the whole estimate is."""
    S, n, m = len(cfg.seeds), cfg.student_widths, cfg.teacher.widths
    raw = n[0] * m[0] + sum(k * k for k in n)
    rows = n[0] * m[0] + sum(k * (k + 1) // 2 for k in n)
    return S * (8 * raw + 2 * ROW_BYTES * rows)


METRIC = EvalMetric(
    name="order",
    title="the weight-space order parameters",
    switch="eval.order",
    measure=measure,
    table=Table(TABLE, SCHEMA, table, bytes_per_eval),
    figure=Figure("order", "studentspec.paper.order_figures:order_figure", "eval.order: R heatmaps."),
)
