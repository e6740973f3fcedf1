"""The run directory: config.yaml, scalars/teachers/students.parquet, summary.json, weights.npz.

Every file is written to a temporary name and renamed; the whole directory is staged beside
its final path and renamed into place last, so a run dir either holds a complete run or
does not exist.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from ..ensemble.atomic import atomic_write, write_all
from ..config import Config, ConfigError, build_config, read_mapping
from ..ensemble.corr import COUNT_THRESHOLDS, rho_mean
from ..mlp.evaluate import fanout_norms
from ..mlp.nets import Net
from ..mlp.train import EvalPoint, TrainResult

FILES = ("config.yaml", "scalars.parquet", "teachers.parquet", "students.parquet", "summary.json", "weights.npz")


class StoreError(ValueError):
    """A missing, incomplete or corrupt run directory; one-line message naming the file."""


def count_column(threshold: float) -> str:
    """Column name of the count of students above a threshold, e.g. n_above_0.95."""
    return f"n_above_{threshold:g}"


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _grid(S: int, n: int, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(np.asarray(seeds), n), np.tile(np.arange(n), S)


def tables(result: TrainResult) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The scalars, teachers and students DataFrames of a finished run."""
    seeds = result.setup.cfg.seeds
    thr = result.setup.cfg.eval.threshold
    teacher_fan = fanout_norms(result.setup.teacher)
    scal, teach, stud = [], [], []
    for p in result.evals:
        S = len(seeds)
        row: dict[str, Any] = {"seed": seeds, "step": p.step, "split": p.split, "mse": _np(p.result.mse), "loss": _np(p.result.loss)}
        for l, ls in enumerate(p.result.layers, start=1):
            row[f"rho_mean_{l}"] = _np(rho_mean(ls))
            row[f"n_specialized_{l}"] = _np(((ls.teacher_best > thr) & ls.teacher_active).sum(1))
            m, n = ls.teacher_best.shape[1], ls.student_best.shape[1]
            seed_col, idx = _grid(S, m, seeds)
            t = {"seed": seed_col, "step": p.step, "split": p.split, "layer": l, "teacher": idx,
                 "best_corr": _np(ls.teacher_best).ravel(), "best_student": _np(ls.teacher_best_student).ravel(),
                 "fanout_norm": _np(teacher_fan[l - 1]).ravel(), "specialized": _np(ls.teacher_best > thr).ravel(),
                 "active": _np(ls.teacher_active).ravel()}
            for i, c in enumerate(COUNT_THRESHOLDS):
                t[count_column(c)] = _np(ls.teacher_counts[..., i]).ravel()
            teach.append(pd.DataFrame(t))
            seed_col, idx = _grid(S, n, seeds)
            stud.append(pd.DataFrame({"seed": seed_col, "step": p.step, "split": p.split, "layer": l, "student": idx,
                                      "best_corr": _np(ls.student_best).ravel(), "best_teacher": _np(ls.student_best_teacher).ravel(),
                                      "fanout_norm": _np(p.student_fanout[l - 1]).ravel()}))
        if p.theory is not None:
            _add_theory(p, row, teach[-len(p.result.layers):], stud[-len(p.result.layers):])
        if p.grad_norm is not None:
            for l in range(p.grad_norm.shape[1]):
                row[f"grad_norm_{l + 1}"] = _np(p.grad_norm[:, l])
        scal.append(pd.DataFrame(row))
    return pd.concat(scal, ignore_index=True), pd.concat(teach, ignore_index=True), pd.concat(stud, ignore_index=True)


def _add_theory(p: EvalPoint, row: dict[str, Any], teach: list[pd.DataFrame], stud: list[pd.DataFrame]) -> None:
    """Add the theory diagnostics of one evaluation point to its scalars row and layer frames."""
    th = p.theory
    assert th is not None
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


def time_to_specialize(teachers: pd.DataFrame, split: str = "eval") -> pd.DataFrame:
    """Per (seed, layer, teacher): first evaluated step at which it was specialized (NaN if never)."""
    df = teachers[teachers["split"] == split]
    first = df[df["specialized"]].groupby(["seed", "layer", "teacher"])["step"].min()
    keys = df[["seed", "layer", "teacher"]].drop_duplicates().set_index(["seed", "layer", "teacher"])
    return keys.join(first.rename("time_to_specialize")).reset_index()


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
        "diverged": {str(k): v for k, v in result.diverged.items()},
        "per_seed": per_seed,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
    }


def _net_arrays(prefix: str, net: Net) -> dict[str, np.ndarray]:
    out = {}
    for l, (w, b) in enumerate(zip(net.weights, net.biases), start=1):
        out[f"{prefix}.W{l}"], out[f"{prefix}.b{l}"] = _np(w), _np(b)
    for l, bn in enumerate(net.norms, start=1):
        out[f"{prefix}.bn{l}.running_mean"], out[f"{prefix}.bn{l}.running_var"] = _np(bn.running_mean), _np(bn.running_var)
        if bn.weight is not None and bn.bias is not None:
            out[f"{prefix}.bn{l}.weight"], out[f"{prefix}.bn{l}.bias"] = _np(bn.weight), _np(bn.bias)
    return out


def strict_json(value: Any) -> Any:
    """`value` with every non-finite float (NaN, +-inf) as None: strict JSON that any reader accepts."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON file atomically, strict (NaN and inf become null)."""
    atomic_write(path, lambda p: p.write_text(json.dumps(strict_json(data), indent=1, default=str, allow_nan=False)))


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON file written by studentspec; StoreError names the file when it is corrupt."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: unreadable or corrupt ({err.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise StoreError(f"{path}: expected a JSON object")
    return data


# What a run dir written by studentspec may hold: its files, `plot`'s figures, `converge`'s results.
RUN_ENTRIES = frozenset({"config.yaml", "scalars.parquet", "teachers.parquet", "students.parquet", "summary.json", "weights.npz",
                         "figures", "converge.json", "converge_teachers.parquet", "converge_students.parquet"})
# Kinds of output dir: the files that mark a complete one (written last) and every entry it may hold.
DIR_KINDS = {
    "run": (("summary.json", "config.yaml"), RUN_ENTRIES),
    "population": (("population.json",), frozenset({"population.json", "figures"})),
}
FIGURE_SUFFIXES = frozenset({".png", ".pdf"})
STAGE_SUFFIX = ".partial-4194304-XXXXXXXX"  # the longest pid, tempfile's 8 random characters
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)-[^.]{8}")
_TMP_FILE = re.compile(r"\.(?P<name>.+)\.[^.]{8}\.tmp")  # atomic_write's temporary name


def _staged_name(name: str) -> str | None:
    """The entry a staging name (check_out's dirs, atomic_write's files) is written for; None for other names."""
    m = _LEFTOVER.fullmatch(name) or _TMP_FILE.fullmatch(name)
    return m["name"] if m else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_leftovers(parent: Path) -> None:
    """Clean up after killed writers in `parent`: a staging dir (`.NAME.partial-PID-*`) whose process is gone is
    deleted; a set-aside old run (`.NAME.old-PID-*`) is put back where its replacement never arrived, else deleted.
    Only dirs of studentspec's naming whose pid is not alive are touched."""
    if not parent.is_dir():
        return
    for d in parent.iterdir():
        m = _LEFTOVER.fullmatch(d.name)
        if m is None or not d.is_dir() or d.is_symlink() or _alive(int(m["pid"])):
            continue
        target, aside = parent / m["name"], d / m["name"]
        if m["kind"] == "old" and aside.is_dir() and not (target.exists() or target.is_symlink()):
            os.replace(aside, target)
        shutil.rmtree(d, ignore_errors=True)


def _protected(path: Path) -> str:
    """Why `path` must never be replaced ("" when it may be): the working directory, a parent of it, home, a root."""
    p, cwd = path.resolve(), Path.cwd().resolve()
    if p == cwd or p in cwd.parents:
        return "it is the working directory or one of its parents"
    if p == Path.home().resolve():
        return "it is the home directory"
    if p == Path(p.anchor):
        return "it is a file-system root"
    return ""


def not_figures(folder: Path) -> list[str]:
    """Names in `folder` that are not figure files studentspec writes (.png, .pdf), sorted."""
    return sorted(e.name for e in folder.iterdir() if e.suffix not in FIGURE_SUFFIXES or not e.is_file())


def _not_ours(path: Path, kind: str = "run") -> str:
    """Why `path` is not a complete `kind` dir (see DIR_KINDS) studentspec wrote ("" when it is)."""
    markers, entries = DIR_KINDS[kind]
    if path.is_symlink() or not path.is_dir():
        return f"it is not a {kind} directory"
    if not all((path / m).is_file() for m in markers):
        return f"it is not a complete studentspec {kind} dir (no {' and '.join(markers)})"
    foreign = sorted(e.name for e in path.iterdir() if e.name not in entries)
    if (path / "figures").is_dir():
        foreign += [f"figures/{name}" for name in not_figures(path / "figures")]
    if foreign:
        return f"it holds files studentspec did not write ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})"
    return ""


def check_out(out: str | Path, overwrite: bool, kind: str = "run") -> None:
    """Raise StoreError (one line) unless a `kind` dir (DIR_KINDS) can be written at `out`: call before any work.

    An existing `out` is replaced only with `overwrite`, and only when it is a complete dir of that
    kind studentspec wrote (nothing else in it) and not the working directory, a parent of it, home
    or a root. The parent must be (or be creatable as) a writable directory.
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise StoreError(f"{out}: already exists (pass --overwrite to replace it)")
        why = _protected(out) or _not_ours(out, kind)
        if why:
            raise StoreError(f"{out}: --overwrite refuses to replace it: {why}")
    if len(f".{out.name}{STAGE_SUFFIX}".encode()) > 255:
        raise StoreError(f"{out}: name too long ({len(out.name.encode())} bytes; its staging name must fit in 255)")
    parent = out.absolute().parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise StoreError(f"{out}: cannot be created: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"{out}: cannot be created: {parent} is not writable")


def check_resumable(out: str | Path, marker: str, what: str, own: frozenset[str] = frozenset()) -> None:
    """Raise StoreError unless `out` is absent, a `what` dir (holding `marker`) that a resumable command
    (sweep, reproduce) adds to, or holds nothing but `own` entries and staging files (an unfinished start):
    it never writes into a folder of other files."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise StoreError(f"{out}: is a dangling link; choose another --out")
    if not out.exists():
        return
    if not out.is_dir():
        raise StoreError(f"{out}: exists and is not a directory; choose another --out")
    if (out / marker).is_file():
        return
    foreign = [e.name for e in out.iterdir() if e.name not in own and _staged_name(e.name) not in own]
    if foreign:
        raise StoreError(f"{out}: holds other files and is not a {what} dir (no {marker}); choose another --out")


def _swap_in(stage: Path, out: Path) -> None:
    """Move the complete `stage` onto `out`: the old dir is renamed aside first and deleted last,
    so at every instant `out` is a complete run dir (old or new) or, for an instant, absent."""
    if not out.exists():
        os.replace(stage, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-{os.getpid()}-"))
    aside = old / out.name
    os.replace(out, aside)
    try:
        os.replace(stage, out)
    except BaseException:
        os.replace(aside, out)  # put the old run back
        os.rmdir(old)
        raise
    shutil.rmtree(old)


def write_dir(out: str | Path, overwrite: bool, fill: Callable[[Path], Any], kind: str = "run") -> Path:
    """Write a `kind` dir atomically: `fill(stage)` writes everything into a staging dir next to `out`
    (its marker files last), which is then swapped onto `out` (see check_out for what may be replaced)."""
    out = Path(out)
    check_out(out, overwrite, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out.parent)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-{os.getpid()}-"))
    try:
        fill(stage)
        _swap_in(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return out


def write_run_dir(out: str | Path, overwrite: bool, cfg: Config, tables3: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
                  arrays: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
    """Write a run dir (config.yaml, scalars/teachers/students.parquet, weights.npz, summary.json) atomically;
    summary.json is written last, so a run dir with a summary is complete."""
    scalars, teachers, students = tables3

    def fill(stage: Path) -> None:
        write_all(stage, {
            "config.yaml": lambda p: p.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False)),
            "scalars.parquet": lambda p: scalars.to_parquet(p, index=False),
            "teachers.parquet": lambda p: teachers.to_parquet(p, index=False),
            "students.parquet": lambda p: students.to_parquet(p, index=False),
            "weights.npz": lambda p: _savez(p, arrays),
        })
        write_json(stage / "summary.json", info)

    return write_dir(out, overwrite, fill)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a path
        np.savez(f, **arrays)


def write_run(result: TrainResult, out: str | Path, overwrite: bool = False) -> Path:
    """Write a finished run to `out` atomically; refuses an existing dir unless overwrite."""
    if result.__class__.__name__ == "ConvResult":  # image data: conv_train writes the same files for conv nets
        from ..conv.train import write_conv_run

        return write_conv_run(result, out, overwrite)  # type: ignore[arg-type]
    scalars, teachers, students = tables(result)
    arrays = _net_arrays("teacher", result.setup.teacher) | _net_arrays("student", result.setup.student)
    return write_run_dir(out, overwrite, result.setup.cfg, (scalars, teachers, students), arrays, summary(result, scalars, teachers))


@dataclass
class Run:
    """A stored run: its config, DataFrames, summary and a lazy view of the weights."""

    path: Path
    config: Config
    scalars: pd.DataFrame
    teachers: pd.DataFrame
    students: pd.DataFrame
    summary: dict[str, Any]

    def weights(self) -> dict[str, np.ndarray]:
        """Final teacher and student weights, keys like 'teacher.W1', 'student.b2'."""
        try:
            with np.load(self.path / "weights.npz") as z:
                return {k: z[k] for k in z.files}
        except Exception as err:
            raise StoreError(f"{self.path / 'weights.npz'}: unreadable ({err.__class__.__name__})") from None

    def time_to_specialize(self, split: str = "eval") -> pd.DataFrame:
        """First evaluated step at which each teacher node was specialized."""
        return time_to_specialize(self.teachers, split)


def load_run(path: str | Path) -> Run:
    """Read a run directory written by `studentspec run`; StoreError names what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise StoreError(f"{path}: run directory not found")
    for name in FILES:
        if not (path / name).is_file():
            raise StoreError(f"{path / name}: missing (incomplete run directory?)")
    try:
        tree = read_mapping(path / "config.yaml")
    except ConfigError as err:
        raise StoreError(f"corrupt run dir: {err}") from None
    try:
        cfg = build_config(tree)
    except ConfigError as err:
        raise StoreError(f"{path / 'config.yaml'}: invalid ({err})") from None
    frames = {}
    for name in ("scalars", "teachers", "students"):
        try:
            frames[name] = pd.read_parquet(path / f"{name}.parquet")
        except Exception as err:
            raise StoreError(f"{path / name}.parquet: corrupt or unreadable ({err.__class__.__name__})") from None
        for col in ("seed", "step", "split"):
            if col not in frames[name].columns:
                raise StoreError(f"{path / name}.parquet: column {col!r} missing")
    info = read_json(path / "summary.json")
    return Run(path, cfg, frames["scalars"], frames["teachers"], frames["students"], info)
