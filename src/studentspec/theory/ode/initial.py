"""From a config to the ODE: which configs the equations describe, the rates in ODE units, the initial state.

The ODEs describe online SGD (a fresh Gaussian sample each step) of a bias-free two-layer net in the limit of
large input dimension; `check_config` refuses, naming the key, every config that breaks one of those
assumptions. A fixed Gaussian training set counts as online when it holds at least GAUSSIAN_SET_FACTOR times the
samples the run draws (steps x batch), so that a sample is seen again at most about 1 / GAUSSIAN_SET_FACTOR of the
time (birthday bound of drawing with replacement).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...config import Config, ConfigError, lr_at, steps_per_epoch
from .integrals import ACTIVATIONS
from .state import OdeSettings, OdeState

GAUSSIAN_SET_FACTOR = 10  # data.kind gaussian: n_train >= this x the samples of the whole run
SETTING_OVERRIDES = ("dt", "method", "mc_samples", "mc_seed")


def horizon_samples(cfg: Config) -> int:
    """Samples the run draws in all: epochs x steps per epoch x batch size."""
    return cfg.train.epochs * steps_per_epoch(cfg.train, cfg.data.n_train) * cfg.train.batch_size


def _lr(cfg: Config) -> float:
    """The run's one learning rate (check_config has refused any that changes within the run)."""
    return lr_at(cfg.train.lr, 0, cfg.train.lr_reduction)


def check_config(cfg: Config) -> None:
    """ConfigError naming the key for a config the ODEs do not describe."""
    t, tr, d = cfg.teacher, cfg.train, cfg.data
    if len(t.widths) != 1:
        raise ConfigError(f"teacher.widths: the ODEs describe one hidden layer, got {len(t.widths)} ({t.widths})")
    if t.activation not in ACTIVATIONS:
        raise ConfigError(f"teacher.activation: {t.activation} has no ODE integrals (one of {', '.join(ACTIVATIONS)})")
    if t.checkpoint is not None:
        raise ConfigError("teacher.checkpoint: the ODEs describe MLP teachers on Gaussian inputs, not conv teachers")
    if not t.no_bias:
        raise ConfigError("teacher.no_bias: the ODEs describe nets without biases; set teacher.no_bias=true")
    if t.tune:
        raise ConfigError("teacher.tune: tuning sets biases, which the ODEs do not describe")
    if t.batchnorm != "none":
        raise ConfigError(f"teacher.batchnorm: the ODEs describe nets without BatchNorm, got {t.batchnorm}")
    if d.kind not in ("online", "gaussian"):
        raise ConfigError(f"data.kind: the ODEs describe Gaussian online data (online, or gaussian), got {d.kind}")
    if d.kind == "gaussian" and not d.regenerate:
        need = GAUSSIAN_SET_FACTOR * horizon_samples(cfg)
        if d.n_train < need:
            raise ConfigError(
                f"data.n_train: {d.n_train} is a fixed set, which the online ODEs describe only when it holds at "
                f"least {GAUSSIAN_SET_FACTOR} x the run's {horizon_samples(cfg)} samples ({need}); or use "
                "data.kind=online"
            )
    if tr.optimizer != "sgd":
        raise ConfigError(f"train.optimizer: the ODEs describe plain SGD, got {tr.optimizer}")
    if tr.momentum != 0:
        raise ConfigError(f"train.momentum: the ODEs describe plain SGD, got momentum {tr.momentum:g}")
    if tr.weight_decay != 0:
        raise ConfigError(f"train.weight_decay: the ODEs have no weight decay, got {tr.weight_decay:g}")
    if tr.loss == "ce":
        raise ConfigError("train.loss: the ODEs describe half_sse and mse, not ce")
    if isinstance(tr.lr, dict) and len(set(tr.lr.values())) > 1:
        raise ConfigError(f"train.lr: the ODEs take one learning rate, not the schedule {tr.lr}")
    if tr.lr_reduction is not None and tr.epochs > tr.lr_reduction:
        raise ConfigError(
            f"train.lr_reduction: {tr.lr_reduction} halves the lr within the run's {tr.epochs} epochs; the ODEs take "
            "one learning rate"
        )
    if cfg.student.normalize:
        raise ConfigError("student.normalize: renormalizing the weights after every step is not in the ODEs")


def settings(cfg: Config, **overrides: Any) -> OdeSettings:
    """The ODE settings of a config: eta = lr_eff s^2 d, eta_v = lr_eff d (0 when layer 2 is frozen), lr_eff = lr x
    the objective's multiple of J (mse: 2 / C); overrides set dt, method, mc_samples, mc_seed."""
    check_config(cfg)
    unknown = sorted(set(overrides) - set(SETTING_OVERRIDES))
    if unknown:
        raise ConfigError(f"{unknown[0]}: not an ODE setting (one of {', '.join(SETTING_OVERRIDES)})")
    from ...ensemble.losses import j_scale  # here, not at import: losses loads torch, the engine is numpy

    scale = j_scale(cfg.train.loss, cfg.output_dim)
    assert scale is not None  # ce refused above
    lr_eff = _lr(cfg) * scale
    s, d = cfg.data.std, cfg.input_dim
    try:
        return OdeSettings(
            activation=cfg.teacher.activation,
            slope=cfg.teacher.leaky_slope if cfg.teacher.activation == "leaky_relu" else 0.0,
            eta=lr_eff * s * s * d if 1 not in cfg.train.freeze else 0.0,
            eta_v=lr_eff * d if 2 not in cfg.train.freeze else 0.0,
            train_first=1 not in cfg.train.freeze,
            batch=cfg.train.batch_size,
            input_dim=d,
            loss=cfg.train.loss,
            **overrides,
        )
    except (ValueError, TypeError) as err:
        raise ConfigError(f"ODE settings: {err}") from None


def initial_state(cfg: Config) -> OdeState:
    """Q, R, T, V, Vt of the initial teacher and student each seed of `studentspec run` builds (same generators)."""
    check_config(cfg)
    import torch  # here, not at import: the ODE engine itself is numpy

    from ...ensemble import seeding
    from ...mlp.teacher import build_teacher
    from ...mlp.train import init_student

    # build() tunes the teacher on the evaluation set only with teacher.tune (refused) or BatchNorm (refused), and
    # the student's generator is its own: these two calls give the run's initial nets
    teacher = build_teacher(cfg, seeding.generators(cfg.seeds, "teacher"))
    student = init_student(
        cfg, seeding.generators(cfg.seeds, "student"), torch.float64, torch.device("cpu"), teacher=teacher
    )
    W = student.weights[0].detach().numpy().astype(np.float64)  # [S, d, K]
    Wt = teacher.weights[0].detach().numpy().astype(np.float64)  # [S, d, M]
    s2 = cfg.data.std**2
    Wtr = np.swapaxes(W, 1, 2)
    return OdeState(
        Q=s2 * Wtr @ W,
        R=s2 * Wtr @ Wt,
        T=s2 * np.swapaxes(Wt, 1, 2) @ Wt,
        V=student.weights[1].detach().numpy().astype(np.float64).copy(),
        Vt=teacher.weights[1].detach().numpy().astype(np.float64).copy(),
    )
