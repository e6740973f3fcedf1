"""The Lemma diagnostics as a per-evaluation metric of MLP runs (theory.enabled): measured on the training data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from ..mlp.metrics import EvalMetric, register
from .lemma import Diagnostics, diagnose


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def measure(setup: Any, points: list[Any]) -> Diagnostics:
    """Diagnostics of the first split (training data; the eval set for online data) on its first theory.samples samples."""
    cfg, th = setup.cfg, setup.cfg.theory
    first = points[0]
    x, y = (setup.stream.x_train, setup.stream.y_train) if first.split == "train" else (setup.x_eval, setup.y_eval)
    corr = [ls.corr for ls in first.result.layers]
    return diagnose(setup.teacher_run, setup.student, x[:, : th.samples], y[:, : th.samples], corr, th.near, th.quantiles, cfg.train.loss)


def columns(p: Any, th: Diagnostics, row: dict[str, Any], teach: list[pd.DataFrame], stud: list[pd.DataFrame]) -> None:
    """Per-sample gradient quantiles per layer (scalars), Hungarian matches and beta norms (per layer), observation,
    boundary proximity and weight angles (lowest teacher layer)."""
    for key, val in th.grad.items():
        for l in range(val.shape[1]):
            row[f"ps_grad_{key}_{l + 1}"] = _np(val[:, l])
    for l, (t, s) in enumerate(zip(teach, stud)):
        match = th.hungarian[l].to(p.result.layers[l].corr.device)
        t["hungarian_student"] = _np(match).ravel()
        t["hungarian_corr"] = _np(p.result.layers[l].corr.gather(2, match[:, :, None]).squeeze(2)).ravel()
        s["beta_norm"] = _np(th.beta_norm[l]).ravel()
    lowest = teach[0]
    lowest["observed"] = _np(th.observed).ravel()
    lowest["near_boundary"] = _np(th.near_boundary).ravel()
    lowest["min_angle"] = _np(th.min_angle).ravel()
    lowest["min_angle_student"] = _np(th.min_angle_student).ravel()


THEORY = register(EvalMetric(name="theory", enabled=lambda cfg: cfg.theory.enabled, measure=measure, columns=columns))
