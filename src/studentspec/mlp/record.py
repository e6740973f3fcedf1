"""An MLP ensemble's result as a RunRecord: the three tables (with the run's metrics' columns), the metrics' own tables,
the weights and summary.json."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..ensemble.corr import COUNT_THRESHOLDS, rho_mean
from ..store.checkpoint import join
from ..store.record import RunRecord, count_column, time_to_specialize
from .evaluate import fanout_norms
from .metrics import Rows, check_columns, check_table
from .nets import Net
from .train import EvalPoint, TrainResult


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _grid(S: int, n: int, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(np.asarray(seeds), n), np.tile(np.arange(n), S)


def tables(result: TrainResult) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The scalars, teachers and students DataFrames of a run (finished, or so far for a checkpoint)."""
    seeds = result.setup.cfg.seeds
    thr = result.setup.cfg.eval.threshold
    teacher_fan = fanout_norms(result.setup.teacher)
    scal, teach, stud = [], [], []
    for p in result.evals:
        S = len(seeds)
        row: dict[str, Any] = {
            "seed": seeds,
            "step": p.step,
            "split": p.split,
            "mse": _np(p.result.mse),
            "loss": _np(p.result.loss),
        }
        for l, ls in enumerate(p.result.layers, start=1):
            row[f"rho_mean_{l}"] = _np(rho_mean(ls))
            row[f"n_specialized_{l}"] = _np(((ls.teacher_best > thr) & ls.teacher_active).sum(1))
            m, n = ls.teacher_best.shape[1], ls.student_best.shape[1]
            seed_col, idx = _grid(S, m, seeds)
            t = {
                "seed": seed_col,
                "step": p.step,
                "split": p.split,
                "layer": l,
                "teacher": idx,
                "best_corr": _np(ls.teacher_best).ravel(),
                "best_student": _np(ls.teacher_best_student).ravel(),
                "fanout_norm": _np(teacher_fan[l - 1]).ravel(),
                "specialized": _np(ls.teacher_best > thr).ravel(),
                "active": _np(ls.teacher_active).ravel(),
            }
            for i, c in enumerate(COUNT_THRESHOLDS):
                t[count_column(c)] = _np(ls.teacher_counts[..., i]).ravel()
            teach.append(pd.DataFrame(t))
            seed_col, idx = _grid(S, n, seeds)
            stud.append(
                pd.DataFrame(
                    {
                        "seed": seed_col,
                        "step": p.step,
                        "split": p.split,
                        "layer": l,
                        "student": idx,
                        "best_corr": _np(ls.student_best).ravel(),
                        "best_teacher": _np(ls.student_best_teacher).ravel(),
                        "fanout_norm": _np(p.student_fanout[l - 1]).ravel(),
                    }
                )
            )
        _add_columns(result, p, Rows(row, teach[-len(p.result.layers) :], stud[-len(p.result.layers) :]))
        if p.grad_norm is not None:
            for l in range(p.grad_norm.shape[1]):
                row[f"grad_norm_{l + 1}"] = _np(p.grad_norm[:, l])
        scal.append(pd.DataFrame(row))
    done = result.restored  # the evaluations a resumed run's checkpoint held, before this process's
    return join(done, "scalars", scal), join(done, "teachers", teach), join(done, "students", stud)


def _add_columns(result: TrainResult, p: EvalPoint, rows: Rows) -> None:
    """The columns the run's metrics measured at point `p` add to its rows (each only the columns it declares)."""
    for metric in result.setup.metrics:
        if metric.columns is None or metric.name not in p.extra:
            continue
        before = [set(rows.scalars), *(set(t.columns) for t in rows.teachers), *(set(s.columns) for s in rows.students)]
        metric.columns.add(p.extra[metric.name], p.result, rows)
        check_columns(metric, "scalars", before[0], rows.scalars)
        for old, t in zip(before[1:], rows.teachers):
            check_columns(metric, "teachers", old, t.columns)
        for old, s in zip(before[1 + len(rows.teachers) :], rows.students):
            check_columns(metric, "students", old, s.columns)


def metric_tables(result: TrainResult) -> dict[str, pd.DataFrame]:
    """The own tables of the run's metrics: table name -> DataFrame (every evaluation, in order; a resumed run's
    restored rows first)."""
    out = {}
    restored = getattr(result, "restored", None) or {}
    s = result.setup
    for metric in s.metrics:
        if metric.table is None:
            continue
        measured = [(p.step, p.extra[metric.name]) for p in result.evals if metric.name in p.extra]
        name = metric.table.name
        if measured or name in restored:
            out[name] = check_table(metric, metric.table.build(s.cfg, s.teacher, measured, restored.get(name)))
    return out


def summary(result: TrainResult, scalars: pd.DataFrame, teachers: pd.DataFrame) -> dict[str, Any]:
    """Per-seed final numbers, divergences, time-to-specialize, versions, wall time."""
    cfg = result.setup.cfg
    last = scalars[scalars["step"] == scalars["step"].max()]
    tts = time_to_specialize(teachers, "eval" if "eval" in set(teachers["split"]) else "train")
    per_seed = {}
    for seed in cfg.seeds:
        rows = last[last["seed"] == seed].set_index("split")
        entry: dict[str, Any] = {f"{split}_mse": float(rows.loc[split, "mse"]) for split in rows.index}
        ev = rows.loc["eval"]
        for l in range(1, len(cfg.teacher.widths) + 1):
            entry[f"n_specialized_{l}"] = int(ev[f"n_specialized_{l}"])
            entry[f"rho_mean_{l}"] = float(ev[f"rho_mean_{l}"])
            t = tts[(tts["seed"] == seed) & (tts["layer"] == l)].sort_values("teacher")["time_to_specialize"]
            entry[f"time_to_specialize_{l}"] = [None if pd.isna(v) else int(v) for v in t]
        entry["diverged_at_step"] = result.diverged.get(seed)
        per_seed[str(seed)] = entry
    return {
        "seeds": cfg.seeds,
        "steps": result.steps,
        "n_train": int(result.setup.stream.x_train.shape[1]),
        "wall_time_s": round(result.wall_time, 3),
        "eval_time_s": round(getattr(result, "eval_time", 0.0), 3),
        "kernel": getattr(result, "kernel", "torch"),  # the training step's path
        "eval_kernel": result.evals[-1].result.path if result.evals else "torch",  # the evaluation's path
        "pipeline": "mlp",
        "resumed_from_epoch": result.resumed_from,  # null unless it continued from a checkpoint
        "diverged": {str(k): v for k, v in result.diverged.items()},
        "per_seed": per_seed,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
    }


def _net_arrays(prefix: str, net: Net) -> dict[str, np.ndarray]:
    out = {}
    for l, (w, b) in enumerate(zip(net.weights, net.biases), start=1):
        out[f"{prefix}.W{l}"], out[f"{prefix}.b{l}"] = _np(w), _np(b)
    for l, bn in enumerate(net.norms, start=1):
        out[f"{prefix}.bn{l}.running_mean"], out[f"{prefix}.bn{l}.running_var"] = (
            _np(bn.running_mean),
            _np(bn.running_var),
        )
        if bn.weight is not None and bn.bias is not None:
            out[f"{prefix}.bn{l}.weight"], out[f"{prefix}.bn{l}.bias"] = _np(bn.weight), _np(bn.bias)
    return out


def record(result: TrainResult) -> RunRecord:
    """The RunRecord of a finished MLP run."""
    scalars, teachers, students = tables(result)
    arrays = _net_arrays("teacher", result.setup.teacher) | _net_arrays("student", result.setup.student)
    return RunRecord(
        result.setup.cfg,
        {"scalars": scalars, "teachers": teachers, "students": students, **metric_tables(result)},
        arrays,
        summary(result, scalars, teachers),
    )
