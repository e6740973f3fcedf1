"""Up-front memory estimate of an MLP run: a config whose tensors cannot fit fails before any work.

The estimate counts what the ensemble trainer holds at once for S seeds: the inputs (drawn in
float64, plus a copy in the run's dtype when it differs, and one in eval.dtype when that differs), the labels, the
student's parameters with their gradients and two optimizer states, the teacher's cached hidden activations, one
evaluation chunk's activations, the correlation matrices kept for every evaluation, and what the run's
metrics with a table of their own keep per evaluation (their declared `bytes_per_eval`). It is a
floor (Python, PyTorch and the allocator add their own), so a config is refused only when the
floor already exceeds the device's total memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..config import Config, ConfigError
from .data import train_size
from .metrics import EvalMetric

CACHE_BYTES = (
    256 * 2**20
)  # per split: above this the trainer recomputes the teacher's hidden activations at every evaluation
GIB = 2**30


def estimate(cfg: Config, metrics: Iterable[EvalMetric] = ()) -> dict[str, int]:
    """Bytes per part of an MLP run of `cfg` (all seeds): inputs, labels, parameters, evaluation, records, and the
    tables of those of `metrics` (the pipeline's registered ones) that `cfg` switches on."""
    S, d, C = len(cfg.seeds), cfg.input_dim, cfg.output_dim
    item = 4 if cfg.train.dtype == "float32" else 8
    n_train = train_size(cfg)
    rows = n_train + cfg.data.n_eval
    inputs = S * rows * d * 8 + (S * rows * d * item if item != 8 or cfg.train.device != "cpu" else 0)
    eval_item = 4 if (cfg.eval.dtype or cfg.train.dtype) == "float32" else 8
    if eval_item != item:  # eval.dtype: the evaluation's own copy of inputs and labels
        inputs += S * rows * (d + C) * eval_item
    s_widths, t_widths = cfg.student_widths, cfg.teacher.widths
    dims = [d, *s_widths, C]
    params = S * sum((a + 1) * b for a, b in zip(dims[:-1], dims[1:]))
    splits = 1 if n_train == 0 else 2
    evals = 1 + sum(1 for e in range(cfg.train.epochs) if (e + 1) % cfg.eval.every == 0 or e + 1 == cfg.train.epochs)
    return {
        "inputs": inputs,
        "labels": S * rows * C * item,
        "parameters": 4 * params * item,  # weights, gradients, two optimizer states
        "evaluation": min(CACHE_BYTES, S * max(rows, 1) * sum(t_widths) * item) * splits
        + 3 * S * cfg.eval.batch_size * (sum(s_widths) + sum(t_widths) + C) * item,
        "records": evals
        * splits
        * S
        * sum(m * n for m, n in zip(s_widths, t_widths))
        * 8,  # the float64 correlation matrices of every evaluation
        "metric tables": evals * sum(m.table.bytes_per_eval(cfg) for m in metrics if m.table is not None and m.on(cfg)),
    }


def total_memory(device: str) -> int:
    """Total memory of `device` in bytes (RAM for the CPU)."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(cfg: Config, available: int | None = None, metrics: Iterable[EvalMetric] = ()) -> None:
    """Raise ConfigError (one line, with the estimate) when the run's tensors alone exceed the device's memory."""
    parts = estimate(cfg, metrics)
    need = sum(parts.values())
    have = total_memory(cfg.train.device) if available is None else available
    if need > have:
        big = ", ".join(
            f"{k} {v / GIB:.1f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v >= 0.01 * need
        )
        raise ConfigError(
            f"this config needs at least {need / GIB:.1f} GiB ({big} GiB) for {len(cfg.seeds)} seeds but "
            f"{cfg.train.device} has {have / GIB:.1f} GiB: use fewer seeds per job (sweep --ensemble-size), "
            f"a smaller data set or train.dtype=float32"
        )
