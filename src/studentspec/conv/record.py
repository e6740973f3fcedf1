"""A conv ensemble's result as a RunRecord: the three tables
(teacher = the checkpoint's channel index), weights, summary."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..ensemble.corr import COUNT_THRESHOLDS, rho_mean
from ..store.checkpoint import join
from ..store.record import RunRecord, count_column
from .nets import ConvNet, fanout_norms
from .train import ConvResult


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def conv_tables(result: ConvResult) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """scalars / teachers / students DataFrames (split 'eval'; teacher = the teacher checkpoint's channel index)."""
    cfg = result.setup.cfg
    seeds, thr = cfg.seeds, cfg.eval.threshold
    S = len(seeds)
    t_fan = fanout_norms(result.setup.ckpt.net)
    scal, teach, stud = [], [], []
    for p in result.evals:
        ev = p.result
        row: dict[str, Any] = {
            "seed": seeds,
            "step": p.step,
            "epoch": p.epoch,
            "split": "eval",
            "mse": _np(ev.mse),
            "loss": _np(ev.loss),
            "accuracy": _np(ev.accuracy),
            "teacher_agreement": _np(ev.agreement),
            "teacher_accuracy": ev.teacher_accuracy,
            "train_loss": _np(p.train_loss) if p.train_loss is not None else np.nan,
        }
        for l, (ls, idx) in enumerate(zip(ev.layers, ev.active), start=1):
            row[f"rho_mean_{l}"] = _np(rho_mean(ls))
            row[f"n_specialized_{l}"] = _np(((ls.teacher_best > thr) & ls.teacher_active).sum(1))
            m, n = ls.teacher_best.shape[1], ls.student_best.shape[1]
            channels = _np(idx.cpu())
            t = {
                "seed": np.repeat(seeds, m),
                "step": p.step,
                "epoch": p.epoch,
                "split": "eval",
                "layer": l,
                "teacher": np.tile(channels, S),
                "best_corr": _np(ls.teacher_best).ravel(),
                "best_student": _np(ls.teacher_best_student).ravel(),
                "fanout_norm": np.tile(_np(t_fan[l - 1][0, idx.cpu()]), S),
                "specialized": _np(ls.teacher_best > thr).ravel(),
                "active": _np(ls.teacher_active).ravel(),
            }
            for i, c in enumerate(COUNT_THRESHOLDS):
                t[count_column(c)] = _np(ls.teacher_counts[..., i]).ravel()
            teach.append(pd.DataFrame(t))
            stud.append(
                pd.DataFrame(
                    {
                        "seed": np.repeat(seeds, n),
                        "step": p.step,
                        "epoch": p.epoch,
                        "split": "eval",
                        "layer": l,
                        "student": np.tile(np.arange(n), S),
                        "best_corr": _np(ls.student_best).ravel(),
                        "best_teacher": channels[_np(ls.student_best_teacher).ravel()],
                        "fanout_norm": _np(p.student_fanout[l - 1]).ravel(),
                    }
                )
            )
        scal.append(pd.DataFrame(row))
    done = result.restored  # the evaluations a resumed run's checkpoint held, before this process's
    return join(done, "scalars", scal), join(done, "teachers", teach), join(done, "students", stud)


def conv_summary(result: ConvResult, scalars: pd.DataFrame) -> dict[str, Any]:
    """Per-seed final accuracy, MSE, rho_mean and specialized counts per layer; the teacher; versions."""
    s = result.setup
    last = scalars[scalars["step"] == scalars["step"].max()]
    per_seed = {}
    for seed in s.cfg.seeds:
        r = last[last["seed"] == seed].iloc[0]
        entry: dict[str, Any] = {
            "eval_mse": float(r["mse"]),
            "accuracy": float(r["accuracy"]),
            "teacher_agreement": float(r["teacher_agreement"]),
        }
        for l in range(1, len(s.ckpt.net.weights) + 1):
            entry[f"rho_mean_{l}"] = float(r[f"rho_mean_{l}"])
            entry[f"n_specialized_{l}"] = int(r[f"n_specialized_{l}"])
        entry["diverged_at_step"] = result.diverged.get(seed)
        per_seed[str(seed)] = entry
    return {
        "seeds": s.cfg.seeds,
        "steps": result.steps,
        "n_train": int(s.data.train_x.shape[0]),
        "n_eval": int(s.data.test_x.shape[0]),
        "wall_time_s": round(result.wall_time, 3),
        "pipeline": "conv",
        "resumed_from_epoch": result.resumed_from,
        "diverged": {str(k): v for k, v in result.diverged.items()},
        "teacher": {
            "checkpoint": s.cfg.teacher.checkpoint,
            "sha256": s.checkpoint_sha256,
            "accuracy": s.ckpt.accuracy,
            "widths": s.ckpt.net.widths,
            "active_widths": s.ckpt.active_widths,
            "inactive": s.ckpt.inactive,
            "eval_accuracy": float(last["teacher_accuracy"].iloc[0]),
        },
        "student_widths": s.student.widths,
        "per_seed": per_seed,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
    }


def _arrays(prefix: str, net: ConvNet) -> dict[str, np.ndarray]:
    out = {}
    for l, (w, b) in enumerate(zip(net.weights, net.biases), start=1):
        out[f"{prefix}.conv{l}.W"], out[f"{prefix}.conv{l}.b"] = _np(w), _np(b)
    out[f"{prefix}.head.W"], out[f"{prefix}.head.b"] = _np(net.head_w), _np(net.head_b)
    for l, bn in enumerate(net.norms, start=1):
        out[f"{prefix}.bn{l}.running_mean"], out[f"{prefix}.bn{l}.running_var"] = (
            _np(bn.running_mean),
            _np(bn.running_var),
        )
        if bn.weight is not None and bn.bias is not None:
            out[f"{prefix}.bn{l}.weight"], out[f"{prefix}.bn{l}.bias"] = _np(bn.weight), _np(bn.bias)
    if net.masks is not None:
        for l, m in enumerate(net.masks, start=1):
            out[f"{prefix}.mask{l}"] = _np(m)
    return out


def record(result: ConvResult) -> RunRecord:
    """The RunRecord of a finished conv run (the same files as an MLP run: config, three tables, summary, weights)."""
    scalars, teachers, students = conv_tables(result)
    arrays = _arrays("teacher", result.setup.ckpt.net) | _arrays("student", result.setup.student)
    return RunRecord(
        result.setup.cfg,
        {"scalars": scalars, "teachers": teachers, "students": students},
        arrays,
        conv_summary(result, scalars),
    )
