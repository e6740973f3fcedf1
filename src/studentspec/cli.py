"""The `studentspec` command: run, plot, converge, population, ode, sweep, query, teacher."""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeAlias

import yaml

from .config import ConfigError, clip, parse_yaml, quote, yaml_problem
from .paper.experiments import EXPERIMENTS

# a fault during the work (a full disk, a file-size limit, ...): one line naming it and what became of the results
EXIT_FAULT = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C

PATH_ARGS = {
    "config": "CONFIG",
    "out": "--out",
    "run_dir": "RUN_DIR",
    "checkpoint": "CHECKPOINT",
    "root": "--root",
    "sweep_dir": "SWEEP_DIR",
    "dirs": "DIR",
    "ode": "--ode",
}  # the parsed arguments that name files or folders


def _limit(path: str, name: str, default: int) -> int:
    """os.pathconf `name` of the nearest existing folder on the way to `path` (default where none answers)."""
    for folder in [Path(path).absolute(), *Path(path).absolute().parents]:
        try:
            return os.pathconf(folder, name)
        except (OSError, ValueError):  # absent, or itself too long to look up
            continue
    return default


def _check_path(option: str, raw: str) -> None:
    """ConfigError (one line) for a path the file system cannot
    hold (ENAMETOOLONG), before any work reads or writes it."""
    data = os.fsencode(raw)
    if b"\0" in data:
        raise ConfigError(f"{option}: a path cannot contain a NUL character")
    longest = max(data.split(b"/"), key=len)
    if len(longest) > (name_max := _limit(raw, "PC_NAME_MAX", 255)):
        raise ConfigError(
            f"{option}: {clip(os.fsdecode(longest), 40)}: file name too "
            f"long ({len(longest)} bytes; the file system allows {name_max})"
        )
    if len(data) >= (path_max := _limit(raw, "PC_PATH_MAX", 4096)):
        raise ConfigError(
            f"{option}: {clip(raw, 40)}: path too long ({len(data)} bytes; the file system allows {path_max - 1})"
        )


def _checked_paths(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`command`, after every path argument it takes (PATH_ARGS) is checked by _check_path."""

    @functools.wraps(command)
    def checked(args: argparse.Namespace) -> int:
        for attr, option in PATH_ARGS.items():
            value = getattr(args, attr, None)
            for raw in value if isinstance(value, list) else [value]:
                if raw is not None:
                    _check_path(option, raw)
        return command(args)

    return checked


@_checked_paths
def _run(args: argparse.Namespace) -> int:
    from . import pipelines
    from .store import check_out
    from .store.checkpoint import checkpoint_path

    cfg = pipelines.load_config(args.config, args.overrides)
    out = Path(args.out)
    check_out(out, args.overwrite)  # before any work
    if args.resume and not checkpoint_path(out).exists():
        print(f"no checkpoint of {out} ({checkpoint_path(out)}): starting from step 0", file=sys.stderr)
    result = pipelines.train(cfg, progress=not args.quiet, out=out, resume=args.resume)
    with pipelines.interrupt_after():  # a Ctrl-C now lets the run dir be written whole first
        pipelines.write_run(result, out, overwrite=args.overwrite)
    for seed, step in result.diverged.items():
        print(f"seed {seed} diverged at step {step} (frozen; see summary.json)", file=sys.stderr)
    resumed = f", resumed after epoch {result.resumed_from}" if result.resumed_from is not None else ""
    print(f"wrote {out} ({result.steps} steps x {len(cfg.seeds)} seeds in {result.wall_time:.1f} s{resumed})")
    return 0


@_checked_paths
def _plot(args: argparse.Namespace) -> int:
    from .paper.figures import plot_run, population_figure, save
    from .store import check_figures, load_run, read_json

    src = Path(args.run_dir)
    out = Path(args.out) if args.out else src / "figures"
    check_figures(out)  # before any work: only a folder of figures studentspec made (or an empty one)
    if args.ode is not None or (src / "ode.json").is_file():  # an ODE dir, or a run with an ODE dir to overlay
        from .paper.ode_figures import plot_ode

        paths = plot_ode(src, out, overlay=Path(args.ode) if args.ode is not None else None)
    elif (src / "population.json").is_file():  # a `studentspec population` dir
        paths = save(population_figure(read_json(src / "population.json")), out, "population")
    else:
        paths = plot_run(load_run(src), out)
    for path in paths:
        print(f"wrote {path}")
    return 0


@_checked_paths
def _converge(args: argparse.Namespace) -> int:
    from . import pipelines
    from .store import load_run
    from .theory import converge

    pipelines.require(load_run(args.run_dir).config, converge.PIPELINES, "converge")
    hessian = {
        k: v
        for k, v in (
            ("hessian_exact_max", args.hessian_exact_max),
            ("hessian_k", args.hessian_k),
            ("hessian_tol_rel", args.hessian_tol_rel),
        )
        if v is not None
    }  # None: converge's defaults
    options = converge.ConvergeOptions(tol=args.tol, max_iter=args.max_iter, method=args.method, **hessian)
    info = converge.converge_run(args.run_dir, options).to_json()
    for seed, r in info["per_seed"].items():
        verdict = ", ".join(
            f"{k} {'holds' if v else 'FAILS' if v is not None else 'n/a'}" for k, v in r["conclusions"].items()
        )
        grad = f"{r['grad_max']:.2e}" if isinstance(r["grad_max"], (int, float)) else "not finite"
        print(
            f"seed {seed}: max per-sample gradient {grad} after {r['iterations']} iterations ({r['stop']}); {verdict}"
        )
        h = r["hessian"]
        if h["method"] == "skipped":
            print(f"  Hessian skipped: {h['note']}")
        else:
            lo, hi = (
                f"{v:.3e}" if v is not None else "not converged" for v in (h["min_eigenvalue"], h["max_eigenvalue"])
            )
            print(
                f"  Hessian ({h['method']}, {h['n_params']} parameters): eigenvalues in [{lo}, {hi}], "
                f"{h['n_near_zero']} near zero, {h['n_negative']} negative"
                + (" (of the extremes computed)" if h["method"] == "lanczos" else "")
            )
    print(
        f"wrote {Path(args.run_dir) / 'converge.json'} (gradient target reached: "
        f"{info['reached']}, all conclusions hold: {info['all_conclusions_hold']})"
    )
    return 0


@_checked_paths
def _population(args: argparse.Namespace) -> int:
    from . import pipelines
    from .store import check_out, write_dir, write_json
    from .theory import population

    cfg = pipelines.load_config(args.config, args.overrides)
    pipelines.require(cfg, population.PIPELINES, "population")
    out = Path(args.out)
    check_out(out, args.overwrite, "population")  # before any work
    info = population.flow_from_config(cfg, steps=args.steps)
    write_dir(
        out,
        args.overwrite,
        lambda stage: write_json(stage / "population.json", info | {"config": cfg.to_dict()}),
        "population",
    )
    final = [round(l[-1], 6) for l in info["loss"]]
    print(f"wrote {out / 'population.json'} (final population loss per seed: {final})")
    return 0


@_checked_paths
def _ode(args: argparse.Namespace) -> int:
    from . import pipelines
    from .theory import ode_record

    cfg = pipelines.load_config(args.config, args.overrides)
    pipelines.require(cfg, ode_record.PIPELINES, "ode")
    options = (("dt", args.dt), ("method", args.method), ("mc_samples", args.mc_samples))
    settings = {k: v for k, v in options if v is not None}  # None: the engine's default
    info = ode_record.write_ode(
        cfg, args.out, overwrite=args.overwrite, t_end=args.time, overrides=settings, progress=not args.quiet
    )
    final = {seed: None if j is None else float(f"{j:.4g}") for seed, j in info["final_J"].items()}
    mc = "" if info["mc_error_max"] is None else f", largest Monte Carlo error {info['mc_error_max']:.2g}"
    print(f"wrote {args.out} (t to {info['t_end']:g} in {info['seconds']:.1f} s{mc}; final J per seed: {final})")
    return 0


def _slurm(items: list[str]) -> dict[str, object]:
    """--slurm KEY=VALUE items as submitit parameters, values parsed as YAML."""
    params = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--slurm {clip(item)}: must look like key=value")
        try:
            params[key] = parse_yaml(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--slurm {clip(key)}: cannot parse value {quote(raw)} ({yaml_problem(err)})") from None
    return params


def _pack(raw: str) -> int | None:
    """--pack: 'auto' -> None, else a number of seeds >= 0 (ConfigError otherwise)."""
    if raw == "auto":
        return None
    if not raw.isdigit():
        raise ConfigError(f"--pack: must be auto or a number of seeds >= 0, got {quote(raw)}")
    return int(raw)


@_checked_paths
def _sweep(args: argparse.Namespace) -> int:
    from .sweep.cost import estimate
    from .sweep.executors import machine_workers
    from .sweep.grid import SweepOptions, job_table, pack_table, run_sweep, summary_table

    pack = _pack(args.pack)
    options = SweepOptions(
        ensemble_size=args.ensemble_size,
        workers=args.workers,
        threads=args.threads,
        dry_run=args.dry_run,
        progress=not args.quiet,
        executor=args.executor,
        address=args.address,
        gpus_per_job=args.gpus_per_job,
        slurm=_slurm(args.slurm),
        pack=pack,
    )
    result = run_sweep(args.config, args.grid, args.out, options)
    if args.dry_run:
        jobs = result["jobs"]
        print(job_table(jobs))
        print(pack_table(result["packs"]))
        workers = args.workers or machine_workers(args.threads)
        cost = estimate(
            args.config,
            [j.overrides for j in jobs],
            [j.seeds for j in jobs],
            workers=workers,
            threads=args.threads,
            tasks=len(result["packs"]),
            configs=result["configs"],
        )
        print(
            f"{cost.jobs} jobs, {cost.seed_steps:.3g} seed-steps, {cost.gflop:.3g} GFLOP; estimated "
            f"{cost.describe()} on {workers} local worker(s) x {args.threads} thread(s)"
        )
        print(cost.calibration([j.id for j in jobs]))
        return 0
    print(summary_table(result))
    for job_id, err in result["failed"].items():
        job = next(j for j in result["jobs"] if j.id == job_id)
        print(
            f"  failed {job_id} ({' '.join(job.overrides) or 'base config'}; seeds {job.seeds}): {err}", file=sys.stderr
        )
    return 1 if result["failed"] else 0


@_checked_paths
def _query(args: argparse.Namespace) -> int:
    from .sweep.grid import query

    print(query(args.sweep_dir, args.sql).to_string(index=False))
    return 0


def _check_checkpoint_out(out: Path, overwrite: bool) -> None:
    """Refuse (one line) an existing `out` unless overwrite and it is a teacher checkpoint studentspec wrote."""
    from .conv.teacher import load_checkpoint
    from .store import StoreError

    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise StoreError(f"{out}: already exists (pass --overwrite to replace it)")
    try:
        load_checkpoint(out)
    except ConfigError:
        raise StoreError(
            f"{out}: --overwrite refuses to replace it: it is not a studentspec teacher checkpoint"
        ) from None


@_checked_paths
def _teacher_train(args: argparse.Namespace) -> int:
    from .conv.teacher import describe, save_checkpoint, teacher_config, train_teacher

    out = Path(args.out)
    _check_checkpoint_out(out, args.overwrite)
    cfg = teacher_config(args.dataset, args.config, args.overrides, root=args.root, epochs=args.epochs)
    ckpt = train_teacher(cfg, progress=not args.quiet)
    save_checkpoint(ckpt, out)
    print(f"wrote {out}: {describe(ckpt)}")
    return 0


@_checked_paths
def _teacher_prune(args: argparse.Namespace) -> int:
    from .conv.teacher import (
        describe,
        file_digest,
        load_checkpoint,
        parse_ratios,
        prune_config,
        prune_teacher,
        save_checkpoint,
    )

    out = Path(args.out)
    _check_checkpoint_out(out, args.overwrite)
    ratios = parse_ratios(args.ratios)
    src = load_checkpoint(args.checkpoint)
    cfg = prune_config(src, args.config, args.overrides, root=args.root, epochs=args.epochs, lr=args.lr)
    ckpt = prune_teacher(src, ratios, cfg, parent=file_digest(args.checkpoint), progress=not args.quiet)
    save_checkpoint(ckpt, out)
    print(f"wrote {out}: {describe(ckpt)} (was {src.accuracy:.4f} before pruning)")
    return 0


@_checked_paths
def _reproduce(args: argparse.Namespace) -> int:
    from .paper.reproduce import dry_run, reproduce

    if args.dry_run:
        print(dry_run(args.name, args.scale, workers=args.workers, executor=args.executor, dataset=args.dataset))
        return 0
    out = args.out or EXPERIMENTS[args.name].default_out(args.scale, args.dataset)
    options: dict[str, object] = {"address": args.address} if args.address else {}
    if args.slurm:
        options["slurm"] = _slurm(args.slurm)
    return reproduce(
        args.name,
        args.scale,
        out,
        workers=args.workers,
        progress=not args.quiet,
        overrides=args.overrides,
        executor=args.executor,
        executor_options=options,
        dataset=args.dataset,
    )


@_checked_paths
def _report(args: argparse.Namespace) -> int:
    from .paper.report import markdown_table, write_report

    if args.markdown:
        print(markdown_table(args.dirs))
        return 0
    for d in args.dirs:
        print(f"wrote {write_report(d, reanalyze=args.reanalyze, point=args.point)}")
    return 0


class _ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line like every other (no usage block), quoting at most ~160 characters."""

    def error(self, message: str) -> NoReturn:
        """Exit 2 with one line naming the command and the problem."""
        command = self.prog.removeprefix("studentspec").strip()
        self.exit(
            EXIT_BAD_INPUT,
            f"studentspec: error: {command + ': ' if command else ''}{clip(message, 160)} (see {self.prog} --help)\n",
        )


_Commands: TypeAlias = "argparse._SubParsersAction[_ArgumentParser]"  # what add_subparsers returns


def _run_args(sub: _Commands) -> None:
    r = sub.add_parser("run", help="train one config (all its seeds batched) and write a run dir")
    r.add_argument("config", help="YAML config file (see configs/)")
    r.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. student.multi=2 train.lr=0.05")
    r.add_argument("--out", required=True, help="run directory to create")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint beside --out (train.checkpoint_every) after a crash or kill",
    )
    r.set_defaults(func=_run)


def _plot_args(sub: _Commands) -> None:
    q = sub.add_parser("plot", help="write the figures of a run dir (PNG and PDF)")
    q.add_argument("run_dir")
    q.add_argument("--out", help="figure folder (default RUN_DIR/figures)")
    q.add_argument(
        "--ode",
        metavar="ODE_DIR",
        help="overlay the curves of a `studentspec ode` dir on the run's loss and order parameters (eval.order: true)",
    )
    q.set_defaults(func=_plot)


def _converge_args(sub: _Commands) -> None:
    c = sub.add_parser(
        "converge", help="continue a stored run to a critical point (float64, L-BFGS/Newton) and check the theorem"
    )
    c.add_argument("run_dir")
    c.add_argument("--tol", type=float, default=1e-10, help="target max per-sample gradient norm")
    c.add_argument("--max-iter", type=int, help="L-BFGS iterations or Newton steps per seed (default 20000 / 300)")
    c.add_argument(
        "--method",
        choices=["auto", "lbfgs", "newton"],
        default="auto",
        help="auto: exact Newton up to 4000 parameters per seed, else L-BFGS",
    )
    c.add_argument(
        "--hessian-exact-max",
        type=int,
        help="Hessian at the end point: all eigenvalues up to this many parameters "
        "per seed (default 3000), else Lanczos extremes",
    )
    c.add_argument(
        "--hessian-k", type=int, help="Lanczos: the k largest and k smallest Hessian eigenvalues (default 10)"
    )
    c.add_argument(
        "--hessian-tol-rel",
        type=float,
        help="an eigenvalue is near zero when |lambda| <= tol_rel * max|lambda| "
        "and negative below -tol_rel * max|lambda| (default 1e-6)",
    )
    c.set_defaults(func=_converge)


def _population_args(sub: _Commands) -> None:
    g = sub.add_parser(
        "population",
        help="gradient flow on the closed-form population loss (one hidden layer, no bias, Gaussian input)",
    )
    g.add_argument("config")
    g.add_argument("overrides", nargs="*")
    g.add_argument("--out", required=True)
    g.add_argument("--steps", type=int, help="default: train.epochs x train.steps_per_epoch")
    g.add_argument("--overwrite", action="store_true")
    g.set_defaults(func=_population)


def _ode_args(sub: _Commands) -> None:
    o = sub.add_parser(
        "ode",
        help="the order-parameter ODEs of online SGD (bias-free two-layer nets, Gaussian online data) from the "
        "same seeds' initial teacher and student as `run`: loss and order parameters vs t = step / input_dim",
    )
    o.add_argument("config")
    o.add_argument("overrides", nargs="*", help="dotted key=value overrides, as for run")
    o.add_argument("--out", required=True, help="ODE directory to create")
    o.add_argument("--time", type=float, help="t_end (default: the config's horizon, total steps / input_dim)")
    o.add_argument("--dt", type=float, help="integration step in t (default 0.01)")
    o.add_argument("--method", choices=["euler", "rk4"], help="fixed-step integrator (default euler)")
    o.add_argument(
        "--mc-samples", type=int, help="Gaussian draws of the Monte Carlo lr^2 term (ReLU, Leaky ReLU; default 20000)"
    )
    o.add_argument("--overwrite", action="store_true", help="replace an existing ODE directory")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    o.set_defaults(func=_ode)


def _sweep_args(sub: _Commands) -> None:
    w = sub.add_parser("sweep", help="run a grid of configs (key=v1,v2 ...), one batched ensemble per job, resumable")
    w.add_argument("config")
    w.add_argument("grid", nargs="*", help="key=v1,v2 (commas inside [] do not split); one value = a plain override")
    w.add_argument("--out", required=True, help="sweep directory (re-run the same command to resume)")
    w.add_argument("--ensemble-size", type=int, help="seeds per job (default: all seeds of a point in one job)")
    w.add_argument("--workers", type=int, help="local worker processes (default: cores / threads)")
    w.add_argument("--threads", type=int, default=1, help="torch threads per job")
    w.add_argument("--executor", choices=["local", "ray", "slurm"], default="local")
    w.add_argument("--address", help="Ray cluster HOST:PORT (--executor ray; default: start a local Ray instance)")
    w.add_argument(
        "--gpus-per-job",
        type=float,
        help="GPUs per Ray job (default 0.25 for CUDA jobs, 0 on CPU); a fraction shares a device",
    )
    w.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="submitit parameter for --executor slurm, e.g. "
        "slurm_partition=dev timeout_min=60; cluster=local runs without SLURM",
    )
    w.add_argument(
        "--pack",
        default="0",
        metavar="auto|N",
        help="train jobs that differ only in build-only keys (teacher.decay, teacher.bias, "
        "student.init_std/init_scale) as one ensemble of at most N seeds, bitwise the same results; auto: up to "
        "256 seeds while the ensemble's memory floor stays under 1 GiB; 0 or 1 (default): off, because on the "
        "2-core reference machine copying the members into one ensemble cost more than it saved (BENCHMARKS.md, "
        "packing)",
    )
    w.add_argument(
        "--dry-run",
        action="store_true",
        help="print the job table, the packing and an estimated cost (one short calibration run), run nothing",
    )
    w.add_argument("--quiet", action="store_true")
    w.set_defaults(func=_sweep)


def _query_args(sub: _Commands) -> None:
    k = sub.add_parser(
        "query", help='SQL over a sweep\'s tables scalars, teachers, students (DuckDB), e.g. "SELECT ... FROM scalars"'
    )
    k.add_argument("sweep_dir")
    k.add_argument("sql")
    k.set_defaults(func=_query)


def _teacher_args(sub: _Commands) -> None:
    t = sub.add_parser("teacher", help="conv teachers on image data: train on labels, prune by fan-out and fine-tune")
    tsub = t.add_subparsers(dest="teacher_command", required=True)
    tt = tsub.add_parser(
        "train", help="train a conv teacher on true labels (default: docs/model.md 4.4's 4 x 64 teacher)"
    )
    tt.add_argument("dataset", choices=["cifar10", "mnist", "fashion_mnist"])
    tt.add_argument(
        "overrides",
        nargs="*",
        help="dotted key=value overrides, e.g. teacher.widths=[16,16,16,16] teacher_train.lr=0.1",
    )
    tt.add_argument("--out", required=True, help="checkpoint file to write (e.g. T.pt)")
    tt.add_argument("--config", help="YAML config whose teacher / teacher_train / data / train sections are used")
    tt.add_argument("--root", help="data folder or archive (data.root)")
    tt.add_argument("--epochs", type=int, help="teacher_train.epochs")
    tt.add_argument("--overwrite", action="store_true")
    tt.add_argument("--quiet", action="store_true")
    tt.set_defaults(func=_teacher_train)
    tp = tsub.add_parser(
        "prune", help="mask the channels with the smallest mean |fan-out weight| and fine-tune with the masks"
    )
    tp.add_argument("checkpoint", help="a checkpoint written by `teacher train` (or `teacher prune`)")
    tp.add_argument(
        "overrides", nargs="*", help="dotted key=value overrides (default: the settings stored in the checkpoint)"
    )
    tp.add_argument(
        "--ratios", default="0.3,0.5,0.5,0.7", help="fraction of channels masked per layer, comma-separated"
    )
    tp.add_argument("--out", required=True, help="checkpoint file to write (e.g. P.pt)")
    tp.add_argument("--config", help="YAML config replacing the checkpoint's stored settings")
    tp.add_argument("--root", help="data folder or archive (default: the one the teacher was trained on)")
    tp.add_argument("--epochs", type=int, help="fine-tuning epochs (teacher_train.finetune_epochs)")
    tp.add_argument("--lr", type=float, help="fine-tuning learning rate (teacher_train.finetune_lr)")
    tp.add_argument("--overwrite", action="store_true")
    tp.add_argument("--quiet", action="store_true")
    tp.set_defaults(func=_teacher_prune)


def _reproduce_args(sub: _Commands) -> None:
    e = sub.add_parser(
        "reproduce",
        help="run one experiment of the paper (sweeps, figures, claims.json PASS/FAIL, report.html); resumable",
    )
    e.add_argument(
        "name", choices=list(EXPERIMENTS)
    )  # the registry (paper/experiments/), read when the parser is built
    e.add_argument(
        "overrides", nargs="*", help="cifar10 and images only: dotted key=value overrides, e.g. data.root=PATH"
    )
    e.add_argument(
        "--scale",
        choices=["tiny", "quick", "paper"],
        default="quick",
        help="paper: the settings of docs/model.md 4; quick: same "
        "shape, minutes on 2 cores; tiny: seconds, a smoke test",
    )
    e.add_argument(
        "--dataset",
        help="images only: the image set, fashion_mnist (default), mnist or cifar10 (data.root=PATH for those two)",
    )
    e.add_argument(
        "--out",
        help="output dir (default runs/reproduce/NAME-SCALE, images: images-DATASET-SCALE); re-run the same command to "
        "resume",
    )
    e.add_argument("--workers", type=int, help="local worker processes (default: one per core)")
    e.add_argument(
        "--executor",
        choices=["local", "ray", "slurm"],
        default="local",
        help="where the sweep jobs run (as in `sweep`)",
    )
    e.add_argument("--address", help="Ray cluster HOST:PORT (--executor ray)")
    e.add_argument(
        "--slurm", action="append", default=[], metavar="KEY=VALUE", help="submitit parameter (--executor slurm)"
    )
    e.add_argument(
        "--dry-run",
        action="store_true",
        help="print every part's jobs, seed-steps, GFLOP and projected wall time (a few short timed runs); run nothing",
    )
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_reproduce)


def _report_args(sub: _Commands) -> None:
    o = sub.add_parser(
        "report",
        help="write DIR/report.html (self-contained) from a run, sweep or reproduce dir's stored results; "
        "no retraining",
    )
    o.add_argument("dirs", nargs="+", metavar="DIR", help="a run, sweep, reproduce or cifar10 reproduce dir")
    o.add_argument(
        "--reanalyze",
        action="store_true",
        help="redraw the figures (and recompute claims.json) from the stored run dirs first",
    )
    o.add_argument(
        "--point",
        metavar="KEY=VALUE,...",
        help="sweep dirs: the grid point whose run figures are drawn (default: the first finished job)",
    )
    o.add_argument(
        "--markdown",
        action="store_true",
        help="print the markdown table of claims and wall times of the DIRs (README), write nothing",
    )
    o.set_defaults(func=_report)


# one function per command, in the order `studentspec --help` lists them
COMMANDS = (
    _run_args,
    _plot_args,
    _converge_args,
    _population_args,
    _ode_args,
    _sweep_args,
    _query_args,
    _teacher_args,
    _reproduce_args,
    _report_args,
)


def parser() -> argparse.ArgumentParser:
    """The argument parser of the `studentspec` command."""
    p = _ArgumentParser(prog="studentspec", description="Teacher-student specialization experiments.")
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return p


def _short(path: object) -> str:
    """A path as text, at most ~100 characters (the middle of a longer one elided)."""
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    return text if len(text) <= 100 else f"{text[:48]}...{text[-48:]}"


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of `path` (not followed), None when absent: a replaced file or dir gets a new one."""
    try:
        st = path.lstat()
    except (OSError, ValueError):  # absent, unreachable, too long, a NUL byte (the command's own check names it)
        return None
    return st.st_dev, st.st_ino


@dataclass(frozen=True)
class Output:
    """What a command writes, seen before it starts, so that the line after a fault or Ctrl-C can say what became of it.

    kind: "whole" (a run dir, population dir or checkpoint file, written whole and swapped in), "resumable" (a sweep
    or reproduce dir: finished jobs are kept) or "files" (files added one by one, each written whole).
    """

    path: Path
    kind: str
    noun: str = ""
    before: tuple[int, int] | None = None
    checkpointed: bool = False  # a run dir, which may have a checkpoint beside it (train.checkpoint_every)

    @classmethod
    def of(cls, path: str | Path, kind: str, noun: str = "", checkpointed: bool = False) -> Output:
        """The output at `path` as it is now."""
        return cls(Path(path), kind, noun, _identity(Path(path)), checkpointed)

    def state(self) -> str:
        """What became of the output, observed now."""
        p = _short(self.path)
        if self.kind == "resumable":
            return f"the finished jobs in {p} are kept; re-run the same command to resume"
        if self.kind == "files":
            return f"each file in {p} is written whole or not at all"
        now, old = _identity(self.path), f"the old {self.noun} at {p}" if self.noun else p
        if now == self.before:
            text = f"{old} is unchanged" if now is not None else f"nothing was written to {p}"
        else:
            text = f"the new {self.noun or 'version'} at {p} is complete" if now is not None else f"{p} is missing"
        store = sys.modules.get("studentspec.store.checkpoint")  # not loaded: the run stopped before training
        if (
            self.checkpointed
            and now == self.before
            and store
            and (store.checkpoint_path(self.path) / store.MARKER).is_file()
        ):
            text += (
                "; the checkpoint "
                f"{_short(store.checkpoint_path(self.path))} is kept: run again with --resume to continue"
            )
        return text

    def holds(self, path: object) -> bool:
        """Whether `path` lies in the output or in a hidden sibling made for it (staging, set aside, checkpoint)."""
        out = Path(os.path.abspath(self.path))
        if not isinstance(path, str | bytes | os.PathLike):  # what os.fsdecode would refuse with TypeError
            return False
        try:
            first = Path(os.path.abspath(os.fsdecode(path))).relative_to(out.parent).parts[0]
        except (TypeError, ValueError, IndexError):
            return False
        return first == out.name or first.startswith(f".{out.name}.")


def _output(args: argparse.Namespace) -> Output | None:
    """The output of the parsed command (None for commands that write nothing)."""
    command = args.command if args.command != "teacher" else f"teacher {args.teacher_command}"
    if command == "run":
        return Output.of(args.out, "whole", "run", checkpointed=True)
    if command == "population":
        return Output.of(args.out, "whole", "population dir")
    if command == "ode":
        return Output.of(args.out, "whole", "ODE dir")
    if command.startswith("teacher "):
        return Output.of(args.out, "whole", "checkpoint")
    if command == "sweep" and not args.dry_run:
        return Output.of(args.out, "resumable")
    if command == "reproduce" and not args.dry_run:
        return Output.of(args.out or EXPERIMENTS[args.name].default_out(args.scale, args.dataset), "resumable")
    if command == "converge":
        return Output.of(Path(args.run_dir) / "converge.json", "whole", "converge.json")
    if command == "plot":
        return Output.of(args.out or Path(args.run_dir) / "figures", "files")
    if command == "report" and not args.markdown:
        return Output.of(args.dirs[0], "files")
    return None


def _fault(err: OSError, output: Output | None) -> str:
    """The one line for an OSError met during the work: what failed (the output being written, or the file), why,
    and the state of the results."""
    reason = (
        os.strerror(err.errno) if err.errno else (str(err).strip().splitlines() or [err.__class__.__name__])[0][:200]
    )
    where = " -> ".join(_short(f) for f in (err.filename, err.filename2) if f is not None)
    if output is None:
        return f"{where}: {reason}" if where else reason
    if where and not output.holds(err.filename):  # another file (an input): name it alone
        return f"{where}: {reason} ({output.state()})"
    at = f" at {where}" if where and where != _short(output.path) else ""
    return f"writing {_short(output.path)}: {reason}{at} ({output.state()})"


def _close_bars() -> None:
    """End any progress bar's line, so that the message after an interrupt starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def _interrupt_once(signum: int, frame: object) -> None:
    """SIGINT: a KeyboardInterrupt, once; later ones are ignored so that a second Ctrl-C cannot break the cleanup."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input exits 2, a fault 1 and Ctrl-C 130, each with one line naming the cause."""
    from .store import StoreError

    args = parser().parse_args(argv)
    output = _output(args)
    handler = signal.getsignal(signal.SIGINT)
    own = handler is signal.default_int_handler and threading.current_thread() is threading.main_thread()
    if own:
        signal.signal(signal.SIGINT, _interrupt_once)
    try:
        return int(args.func(args))
    except (ConfigError, StoreError) as err:
        print(f"studentspec: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _close_bars()
        print(f"studentspec: interrupted{': ' + output.state() if output else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (`studentspec query ... | head`): nothing to tell
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # else the exit's flush fails again, loudly
        except (OSError, ValueError):
            pass
        return EXIT_FAULT
    except OSError as err:
        _close_bars()
        print(f"studentspec: error: {_fault(err, output)}", file=sys.stderr)
        return EXIT_FAULT
    finally:
        if own:
            signal.signal(signal.SIGINT, handler)


if __name__ == "__main__":
    sys.exit(main())
