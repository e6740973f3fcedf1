"""`studentspec ode`: a config's order-parameter ODEs solved and written as an ODE dir; specialization in ODE terms.

An ODE dir holds (all written whole through store.write_dir, kind "ode"):
  ode.parquet        seed, t, step = t x input_dim, loss = the population value of the config's training
                     objective (J x losses.j_scale: half_sse J, mse 2J/C), mse = the mean over outputs of the
                     squared error (2J/C);
  ode_order.parquet  seed, t, step, kind, i, j, value: the order parameters (docs/model.md 6.1, with the input
                     variance s^2 folded in) at every stored t:
                       Q     s^2 w_i . w_j, student i against student j (i <= j);
                       R     s^2 w_i . w*_j, student i against teacher j;
                       VV    v_i . v_j, the student's fan-out products V V^T (i <= j);
                       VVt   v_i . v*_j, student fan-out against teacher fan-out, V V*^T;
                       T     s^2 w*_i . w*_j and VtVt v*_i . v*_j (the teacher's, i <= j): fixed, stored once at t = 0;
  ode.json           settings, config, seeds, timing, the largest Monte Carlo error of the right-hand side and the
                     specialization summary (per seed, per teacher: the ODE's time-to-specialize);
  config.yaml        the config, as in a run dir.

Specialization in ODE terms: the cosine of student k and teacher m is R_km / sqrt(Q_kk T_mm), the cosine of the two
weight vectors under the input covariance, which equals the correlation of the two PRE-activations over the input
distribution. A teacher counts as specialized at the first stored t where some student's cosine exceeds
eval.threshold. A run measures Tian's correlation of the POST-activation node outputs over its evaluation set
(mlp/evaluate.py): the same nets, another statistic, so the two times differ (docs/theory.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..config import Config, ConfigError, steps_per_epoch
from ..ensemble.losses import j_scale
from ..store import check_out, read_json, write_dir, write_json

PIPELINES = ("mlp",)  # bias-free two-layer MLPs on Gaussian online data; everything else is refused (exit 2)
KIND = "ode"  # the store's dir kind (store/dirs.py DIR_KINDS)
ORDER_KINDS = ("Q", "R", "T", "VV", "VVt", "VtVt")
POINTS = 200  # stored times: about this many, log- and linearly spaced (log-log loss plots and linear ones)


def horizon(cfg: Config) -> float:
    """The config's training horizon in ODE time: total steps / input_dim."""
    from ..mlp.data import train_size

    return cfg.train.epochs * steps_per_epoch(cfg.train, train_size(cfg)) / cfg.input_dim


def times(t_end: float, dt: float, points: int = POINTS) -> np.ndarray:
    """Stored times in [0, t_end]: half log-spaced from dt, half linear, on the integrator's grid (multiples of dt)."""
    raw = np.concatenate([[0.0], np.geomspace(dt, t_end, points // 2), np.linspace(0.0, t_end, points // 2 + 1)])
    grid = np.unique(np.round(raw / dt)) * dt
    return grid[grid <= t_end * (1 + 1e-12)]


def specialization_times(t: np.ndarray, R: np.ndarray, Q: np.ndarray, T: np.ndarray, threshold: float) -> np.ndarray:
    """Per seed and teacher [S, M]: the first t whose best student cosine exceeds `threshold` (NaN if none does).

    t [n], R [n, S, K, M], Q [n, S, K, K], T [S, M, M]."""
    from .ode import cosines

    best = cosines(R, Q, T[None]).max(axis=-2)  # [n, S, M]
    above = best > threshold
    first = np.argmax(above, axis=0)  # the first True along t (0 when none: masked below)
    return np.where(above.any(axis=0), np.asarray(t, dtype=float)[first], math.nan)


def order_table(sol: Any, seeds: list[int], input_dim: int) -> pd.DataFrame:
    """ode_order.parquet's rows (seed, t, step, kind, i, j, value) of a solution (theory.ode.OdeSolution)."""
    t, frames = np.asarray(sol.t, dtype=float), []
    S = len(seeds)

    def add(kind: str, values: np.ndarray, at: np.ndarray, upper: bool) -> None:
        # values [n, S, a, b] at times `at` [n]
        n, _, a, b = values.shape
        ii, jj = np.triu_indices(a) if upper else np.indices((a, b)).reshape(2, -1)
        v = values[:, :, ii, jj]  # [n, S, pairs]
        frames.append(
            pd.DataFrame(
                {
                    "seed": np.repeat(np.asarray(seeds, dtype=np.int64), len(ii))[None].repeat(n, 0).ravel(),
                    "t": np.repeat(at, S * len(ii)),
                    "step": np.repeat(np.rint(at * input_dim).astype(np.int64), S * len(ii)),
                    "kind": kind,
                    "i": np.tile(ii, n * S).astype(np.int64),
                    "j": np.tile(jj, n * S).astype(np.int64),
                    "value": v.ravel(),
                }
            )
        )

    add("Q", np.asarray(sol.Q), t, True)
    add("R", np.asarray(sol.R), t, False)
    V = np.asarray(sol.V)  # [n, S, K, C]
    Vt = np.asarray(sol.Vt)  # [S, M, C]
    add("VV", V @ V.swapaxes(-1, -2), t, True)
    add("VVt", V @ Vt.swapaxes(-1, -2)[None], t, False)
    add("T", np.asarray(sol.T)[None], t[:1], True)
    add("VtVt", (Vt @ Vt.swapaxes(-1, -2))[None], t[:1], True)
    return pd.concat(frames, ignore_index=True)


def loss_table(sol: Any, seeds: list[int], cfg: Config) -> pd.DataFrame:
    """ode.parquet's rows (seed, t, step, loss, mse) of a solution: J scaled to the config's objective, mse = 2J/C."""
    t, J = np.asarray(sol.t, dtype=float), np.asarray(sol.J, dtype=float)  # J [n, S]
    n, S = J.shape
    scale = j_scale(cfg.train.loss, cfg.output_dim)
    if scale is None:  # check_config refuses ce first; a guard for direct callers
        raise ConfigError(f"train.loss={cfg.train.loss}: the ODE describes half_sse and mse only")
    return pd.DataFrame(
        {
            "seed": np.tile(np.asarray(seeds, dtype=np.int64), n),
            "t": np.repeat(t, S),
            "step": np.repeat(np.rint(t * cfg.input_dim).astype(np.int64), S),
            "loss": (J * scale).ravel(),
            "mse": (2.0 * J / cfg.output_dim).ravel(),
        }
    )


def summary(sol: Any, cfg: Config, settings: Any, *, seconds: float, t_end: float) -> dict[str, Any]:
    """ode.json: settings, seeds, timing, Monte Carlo error and the ODE's time-to-specialize per seed and teacher."""
    seeds = list(cfg.seeds)
    thr = cfg.eval.threshold
    tts = specialization_times(np.asarray(sol.t), np.asarray(sol.R), np.asarray(sol.Q), np.asarray(sol.T), thr)
    mc = np.asarray(sol.mc_error, dtype=float)
    J = np.asarray(sol.J, dtype=float)

    def num(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None

    return {
        "seeds": seeds,
        "input_dim": cfg.input_dim,
        "t_end": float(t_end),
        "n_times": int(len(sol.t)),
        "settings": {k: (v if not isinstance(v, np.generic) else v.item()) for k, v in asdict(settings).items()},
        "seconds": round(float(seconds), 3),
        "solve_seconds": round(float(getattr(sol, "seconds", seconds)), 3),
        "mc_error_max": num(float(np.nanmax(mc))) if mc.size and np.isfinite(mc).any() else None,
        "final_J": {str(s): num(float(J[-1, i])) for i, s in enumerate(seeds)},
        "specialization": {
            "threshold": thr,
            "measure": "cosine R_km / sqrt(Q_kk T_mm) (pre-activation correlation), first stored t above threshold",
            "time_to_specialize": {str(s): [num(float(v)) for v in tts[i]] for i, s in enumerate(seeds)},
        },
        "config": cfg.to_dict(),
    }


def check_time(value: float | None, option: str) -> None:
    """ConfigError unless `value` (a command option) is None or a finite number > 0."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{option}: must be a finite number > 0, got {value!r}")


def solve_config(
    cfg: Config,
    *,
    t_end: float | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
) -> tuple[Any, Any, float, float]:
    """(solution, settings, seconds, t_end) of the config's ODE from the same seeds' initial teacher and student."""
    from . import ode

    ode.check_config(cfg)
    s = ode.settings(cfg, **(overrides or {}))
    t_end = horizon(cfg) if t_end is None else t_end
    start = time.perf_counter()
    state = ode.initial_state(cfg)
    sol = ode.solve(state, s, t_end=t_end, t_eval=times(t_end, s.dt), progress=progress)
    return sol, s, time.perf_counter() - start, t_end


def write_ode(
    cfg: Config,
    out: str | Path,
    *,
    overwrite: bool = False,
    t_end: float | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Check everything (config, options, the output dir), solve the ODE, write the ODE dir whole; return ode.json."""
    from . import ode

    check_time(t_end, "--time")
    check_time((overrides or {}).get("dt"), "--dt")
    samples = (overrides or {}).get("mc_samples")
    if samples is not None and samples < 2:
        raise ConfigError(f"--mc-samples: must be at least 2 (its error is estimated from the draws), got {samples}")
    ode.check_config(cfg)
    check_out(out, overwrite, KIND)  # before any work
    sol, s, seconds, t_end = solve_config(cfg, t_end=t_end, overrides=overrides, progress=progress)
    info = summary(sol, cfg, s, seconds=seconds, t_end=t_end)
    seeds = list(cfg.seeds)

    def fill(stage: Path) -> None:
        loss_table(sol, seeds, cfg).to_parquet(stage / "ode.parquet", index=False)
        order_table(sol, seeds, cfg.input_dim).to_parquet(stage / "ode_order.parquet", index=False)
        (stage / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_json(stage / "ode.json", info)  # last: a dir with ode.json is complete

    write_dir(out, overwrite, fill, KIND)
    return info


LOSS_COLUMNS = {"seed": "integer", "t": "number", "step": "integer", "loss": "number", "mse": "number"}
ORDER_COLUMNS = {
    "seed": "integer",
    "t": "number",
    "step": "integer",
    "kind": "text",
    "i": "integer",
    "j": "integer",
    "value": "number",
}


def load_ode(path: str | Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """(ode.json, ode.parquet, ode_order.parquet) of an ODE dir, each checked; StoreError naming the file otherwise."""
    from ..store import StoreError
    from ..store.record import read_table

    path = Path(path)
    if not (path / "ode.json").is_file():
        raise StoreError(f"{path}: not an ODE dir (no ode.json; write one with `studentspec ode`)")
    info = read_json(path / "ode.json")
    seeds = list(info["seeds"])
    try:
        loss = read_table(path / "ode.parquet", LOSS_COLUMNS, seeds)
        order = read_table(path / "ode_order.parquet", ORDER_COLUMNS, seeds)
    except (OSError, ValueError) as err:
        if isinstance(err, StoreError):
            raise
        raise StoreError(f"{path}: cannot read its tables ({err.__class__.__name__}: {err})") from None
    bad = sorted(set(order["kind"]) - set(ORDER_KINDS))
    if bad:
        raise StoreError(f"{path / 'ode_order.parquet'}: column kind: unknown kind {bad[0]!r} (one of {ORDER_KINDS})")
    return info, loss, order


def ode_cosines(order: pd.DataFrame) -> pd.DataFrame:
    """Per (seed, t, student i, teacher j): the cosine R_ij / sqrt(Q_ii T_jj) from an ode_order table."""
    q = order[(order["kind"] == "Q") & (order["i"] == order["j"])][["seed", "t", "i", "value"]]
    tt = order[(order["kind"] == "T") & (order["i"] == order["j"])][["seed", "j", "value"]]
    r = order[order["kind"] == "R"][["seed", "t", "i", "j", "value"]]
    df = r.merge(q.rename(columns={"value": "q"}), on=["seed", "t", "i"]).merge(
        tt.rename(columns={"value": "tm"}), on=["seed", "j"]
    )
    norm = np.sqrt(df["q"].clip(lower=0) * df["tm"].clip(lower=0))
    return df.assign(cosine=np.where(norm > 0, df["value"] / norm.where(norm > 0, 1.0), 0.0))[
        ["seed", "t", "i", "j", "cosine"]
    ]


def compare_specialization(info: dict[str, Any], run_tts: pd.DataFrame, input_dim: int) -> pd.DataFrame:
    """Per (seed, teacher): the ODE's time-to-specialize (ode.json) beside the run's (its first specialized eval step,
    correlation over data, layer 1), both in t = step / input_dim."""
    rows = []
    run = run_tts[run_tts["layer"] == 1] if "layer" in run_tts else run_tts
    by = {(int(r.seed), int(r.teacher)): r.time_to_specialize for r in run.itertuples()}
    for seed, times_ in info["specialization"]["time_to_specialize"].items():
        for m, t in enumerate(times_):
            step = by.get((int(seed), m), math.nan)
            rows.append(
                {
                    "seed": int(seed),
                    "teacher": m,
                    "ode_t": math.nan if t is None else float(t),
                    "run_t": float(step) / input_dim if step is not None and not pd.isna(step) else math.nan,
                }
            )
    return pd.DataFrame(rows, columns=["seed", "teacher", "ode_t", "run_t"])


__all__ = [
    "KIND",
    "ORDER_KINDS",
    "PIPELINES",
    "compare_specialization",
    "horizon",
    "load_ode",
    "loss_table",
    "ode_cosines",
    "order_table",
    "solve_config",
    "specialization_times",
    "summary",
    "times",
    "write_ode",
]
