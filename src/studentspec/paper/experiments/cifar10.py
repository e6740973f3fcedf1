"""docs/model.md 4.4 end to end: train the conv teacher, prune it, train students for each multi, draw the figures.

`run(out_dir, scale)` is what `studentspec reproduce cifar10` calls. Every stage is kept in out_dir
and reused when it is already there (a valid checkpoint or a complete run dir), so an interrupted
reproduction resumes where it stopped:

    out_dir/teacher.pt, teacher_pruned.pt, runs/multi_<m>/, figures/, reproduce.json

`report_body` is its part of `studentspec report out_dir`: teachers, students per multi, figures.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...config import ConfigError, load_config, read_mapping
from .. import page
from .base import Experiment

NAME = "cifar10"
SCALES = {"tiny": "cifar10_quick.yaml", "quick": "cifar10_quick.yaml", "paper": "cifar10.yaml"}
DEFAULT_MULTIS = [1.0, 2.0, 5.0]
# tiny: seconds, a smoke test of the whole pipeline (its numbers mean nothing): the quick preset shrunk to a
# 4 x 4 channel teacher, 60 training images, one epoch each for teacher and fine-tuning, students multi 1 and 2
TINY_OVERRIDES = [
    "seeds=[1,2]",
    "teacher.widths=[4,4,4,4]",
    "data.n_train=40",
    "data.n_eval=20",
    "teacher_train.epochs=1",
    "teacher_train.batch_size=30",
    "teacher_train.n_train=60",
    "teacher_train.finetune_epochs=1",
    "train.lr=0.005",
    "train.batch_size=20",
    "train.epochs=2",
    "eval.batch_size=10",
]
TINY_MULTIS = [1.0, 2.0]

CAPTIONS = {
    "layer_corr": "CIFAR-10 (4.4): per layer, mean over active teacher channels of the best student correlation vs "
    "epoch, mean ± std over seeds; one panel per multi.",
    "channel_corr": "CIFAR-10 (4.4): best correlation of every active teacher channel vs epoch (mean over seeds), "
    "coloured by fan-out norm; rows = multi, columns = layer.",
}


def config_path(scale: str) -> Path:
    """The preset of a scale in the repository's configs/ folder."""
    if scale not in SCALES:
        raise ConfigError(f"scale: must be one of {sorted(SCALES)}, got {scale!r}")
    path = Path(__file__).resolve().parents[4] / "configs" / SCALES[scale]
    if not path.is_file():
        raise ConfigError(f"{path}: preset not found (run from a source checkout of studentspec, or pass config=...)")
    return path


def _multis(path: Path, scale: str) -> list[float]:
    """student.multi values of the preset's sweep grid (docs/model.md 4.4: 1, 2, 5); tiny: 1, 2."""
    if scale == "tiny":
        return list(TINY_MULTIS)
    grid = (read_mapping(path).get("sweep") or {}).get("grid") or {}
    values = grid.get("student.multi", DEFAULT_MULTIS)
    return [float(v) for v in (values if isinstance(values, list) else [values])]


def stage_runner(times: dict[str, float], progress: bool) -> Callable[[str, Callable[[], Any], Callable[[], Any]], Any]:
    """A stage runner: load a kept result, else make it; the seconds taken go to `times`."""
    from ...store import StoreError

    def stage(name: str, make: Callable[[], Any], load: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            obj = load()
            how = "reused"
        except (ConfigError, StoreError):
            obj = make()
            how = "made"
        times[name] = round(time.perf_counter() - t0, 1)
        if progress:
            print(f"{name}: {how} in {times[name]:.1f} s")
        return obj

    return stage


def run(
    out_dir: str | Path,
    scale: str = "quick",
    overrides: list[str] | None = None,
    *,
    config: str | Path | None = None,
    progress: bool = True,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Teacher -> pruned teacher -> one student run per multi -> figures and reproduce.json in out_dir.

    Raises ConfigError (the CLI's exit 2) with instructions to obtain CIFAR-10 when data.root
    does not hold it. `overrides` are dotted key=value pairs applied to the preset (e.g.
    data.root=PATH, seeds=[1,2]); `config` replaces the preset file. Scale `tiny` is the quick preset with
    TINY_OVERRIDES (applied before `overrides`). Raises StoreError when out_dir holds another scale.
    `dataset` is None (`reproduce images --dataset cifar10` runs this protocol on other data sets).
    """
    if dataset is not None:
        raise ConfigError(f"--dataset: reproduce {NAME} takes none (reproduce images does), got {dataset!r}")
    from ...store import write_json

    path = Path(config) if config is not None else config_path(scale)
    overrides = list(overrides or [])
    settings = (TINY_OVERRIDES if scale == "tiny" and config is None else []) + overrides
    cfg, data = _config_and_data(path, settings)
    out = Path(out_dir)
    claim_out(out, {"experiment": NAME, "scale": scale})
    times: dict[str, float] = {}
    info, _ = protocol(
        out, path, settings, cfg, data, scale=scale, stage=stage_runner(times, progress), progress=progress
    )
    info = (
        {"experiment": NAME, "per_multi": info.pop("per_multi")}
        | {"scale": scale, "config": str(path), "overrides": overrides, "stage_seconds": times}
        | info
    )
    write_json(out / "reproduce.json", info)
    return info


def claim_out(out: Path, held: dict[str, str]) -> None:
    """Mark out as a resumable reproduce dir, after checking that its reproduce.json (if any) holds `held`.

    StoreError when it holds another experiment, scale or data set (its teacher and runs are theirs).
    """
    from ...store import StoreError, claim_resumable, read_json

    if (out / "reproduce.json").is_file():
        info = read_json(out / "reproduce.json")
        if any(info.get(key) != want for key, want in held.items()):
            on = f" on {info['dataset']}" if info.get("dataset") else ""
            raise StoreError(
                f"{out}: holds {info.get('experiment')} at scale {info.get('scale')}{on}; choose another --out"
            )
    claim_resumable(out, "reproduce")


def protocol(
    out: Path, path: Path, settings: list[str], cfg: Any, data: Any, *, scale: str, stage: Any, progress: bool
) -> tuple[dict[str, Any], dict[float, Any]]:
    """docs/model.md 4.4's protocol in out: teacher, pruned teacher, a student run per multi, the two figures.

    Shared by `reproduce cifar10` and `reproduce images`. Returns the record for reproduce.json (per_multi,
    teacher, pruned, figures) and the student runs by multi.
    """
    from ..conv_figures import channel_corr_figure, layer_corr_figure
    from ..style import save

    teacher, pruned = _teachers(cfg, data, out, stage=stage, progress=progress)
    runs = _students(path, settings, data, out, scale=scale, stage=stage, progress=progress)
    fig_dir = out / "figures"
    figures = save(layer_corr_figure(runs), fig_dir, "layer_corr") + save(
        channel_corr_figure(runs), fig_dir, "channel_corr"
    )
    info = summarize(runs) | {
        "teacher": {"accuracy": teacher.accuracy, "widths": teacher.net.widths},
        "pruned": {"accuracy": pruned.accuracy, "active_widths": pruned.active_widths, "ratios": pruned.ratios},
        "figures": [str(p) for p in figures],
    }
    return info, runs


def _config_and_data(path: Path, settings: list[str]) -> tuple[Any, Any]:
    """The experiment's config and its CIFAR-10 images; ConfigError saying how to get them when they are missing."""
    from ...images import how_to_get, load_images

    cfg = load_config(path, settings)
    if cfg.data.kind != "cifar10":
        raise ConfigError(f"data.kind: reproduce cifar10 needs data.kind=cifar10, got {cfg.data.kind}")
    try:
        data = load_images(cfg.data.kind, cfg.data.root)
    except ConfigError as err:
        raise ConfigError(
            f"{err} (CIFAR-10 is not downloaded at run time: {how_to_get('cifar10')}, e.g. "
            f"`studentspec reproduce cifar10 data.root=PATH`)"
        ) from None
    return cfg, data


def _teachers(cfg: Any, data: Any, out: Path, *, stage: Any, progress: bool) -> tuple[Any, Any]:
    """The teacher trained on labels and its pruned, fine-tuned copy (out/teacher.pt, out/teacher_pruned.pt)."""
    from ...conv.teacher import describe, file_digest, load_checkpoint, prune_teacher, save_checkpoint, train_teacher

    t_path, p_path = out / "teacher.pt", out / "teacher_pruned.pt"
    n_train = cfg.teacher_train.n_train

    def make_teacher() -> Any:
        save_checkpoint(train_teacher(cfg, data.subset(n_train), progress), t_path)
        return load_checkpoint(t_path)

    teacher = stage("teacher", make_teacher, lambda: load_checkpoint(t_path))

    def make_pruned() -> Any:
        ratios = cfg.teacher_train.prune_ratios
        pruned = prune_teacher(
            teacher, ratios, cfg, data=data.subset(n_train), parent=file_digest(t_path), progress=progress
        )
        save_checkpoint(pruned, p_path)
        return load_checkpoint(p_path)

    pruned = stage("pruned", make_pruned, lambda: load_checkpoint(p_path))
    if progress:
        print(f"teacher: {describe(teacher)}\npruned:  {describe(pruned)}")
    return teacher, pruned


def _students(
    path: Path, settings: list[str], data: Any, out: Path, *, scale: str, stage: Any, progress: bool
) -> dict[float, Any]:
    """One student run per multi, taught by the pruned teacher (out/runs/multi_M)."""
    from ... import pipelines
    from ...conv.train import build as build_conv
    from ...store import load_run

    p_path = out / "teacher_pruned.pt"
    runs = {}
    for multi in _multis(path, scale):
        run_dir = out / "runs" / f"multi_{multi:g}"
        run_cfg = load_config(
            path, settings + [f"student.multi={multi}", f"teacher.checkpoint={json.dumps(str(p_path.resolve()))}"]
        )

        def make(run_cfg: Any = run_cfg, run_dir: Path = run_dir) -> Any:
            pipelines.write_run(
                pipelines.train(run_cfg, progress, setup=build_conv(run_cfg, data)), run_dir, overwrite=True
            )
            return load_run(run_dir)

        runs[multi] = stage(f"multi {multi:g}", make, functools.partial(load_matching, run_dir, run_cfg))
    return runs


def load_matching(run_dir: Path, cfg: Any) -> Any:
    """The stored run in run_dir when it was trained with `cfg`; StoreError (the stage is made anew) otherwise."""
    from ...store import StoreError, load_run

    run = load_run(run_dir)
    if run.config != cfg:  # a changed preset or override: its numbers are another config's
        raise StoreError(f"{run_dir}: trained with another config")
    return run


# what the dry run leaves out: seconds at every scale
NOT_PROJECTED = "not projected: reading the images, building the conv nets, checkpoints, run dirs, figures"


def protocol_cost(path: Path, settings: list[str], scale: str, title: str) -> tuple[Any, Any, list[Any], list[str]]:
    """docs/model.md 4.4's protocol projected (conv/cost.py): the config, the data set's shape, its stages (teacher,
    pruned teacher, a student per multi) and the lines of the table's text (the title, the data set, what was timed).
    Reads no image and writes nothing."""
    from ...conv import cost

    cfg = load_config(path, settings)
    data, line = cost.data_shape(cfg.data.kind, cfg.data.root)
    projection = cost.protocol(cfg, _multis(path, scale), data)
    head, *timed = projection.notes
    return cfg, data, projection.stages, [f"{title}: projected {head}", line, *timed]


def dry_run(scale: str, dataset: str | None = None) -> str:
    """`reproduce cifar10 --scale S --dry-run`: every stage's epochs, steps, samples, GFLOP and projected seconds on
    this machine, and their total (conv/cost.py); CIFAR-10 need not be on disk."""
    from ...conv.cost import table

    if dataset is not None:
        raise ConfigError(f"--dataset: reproduce {NAME} takes none (reproduce images does), got {dataset!r}")
    path = config_path(scale)
    title = f"reproduce {NAME} --scale {scale}"
    _, _, stages, lines = protocol_cost(path, TINY_OVERRIDES if scale == "tiny" else [], scale, title)
    return table(lines[0], stages, [*lines[1:], NOT_PROJECTED])


def summarize(runs: dict[float, Any]) -> dict[str, Any]:
    """Per multi: final student accuracy and per-layer mean best correlation, mean and std over seeds."""
    import numpy as np

    out = {}
    for multi, run in sorted(runs.items()):
        sc = run.scalars
        last = sc[sc["step"] == sc["step"].max()]
        layers = sorted(int(c.rsplit("_", 1)[1]) for c in sc.columns if c.startswith("rho_mean_"))
        out[f"{multi:g}"] = {
            "accuracy_mean": float(last["accuracy"].mean()),
            "accuracy_std": float(np.std(last["accuracy"])),
            "rho_mean": [float(last[f"rho_mean_{l}"].mean()) for l in layers],
            "rho_std": [float(np.std(last[f"rho_mean_{l}"])) for l in layers],
            "run": str(run.path),
        }
    return {"per_multi": out}


def _stored_runs(out: Path, redraw: bool, name: str) -> dict[float, Any]:
    """The student runs of a reproduce dir by multi, their figures drawn when missing (or all, with redraw)."""
    from ...store import StoreError, check_figures, load_run
    from ..conv_figures import channel_corr_figure, layer_corr_figure
    from ..style import save

    dirs = sorted(d for d in (out / "runs").glob("multi_*") if d.is_dir()) if (out / "runs").is_dir() else []
    if not dirs:
        raise StoreError(
            f"{out}: {name} reproduce dir without runs/multi_*/ (re-run `studentspec reproduce {name}` to finish it)"
        )
    runs = {float(run.config.student.multi): run for run in map(load_run, dirs)}
    fig_dir = out / "figures"
    check_figures(fig_dir)
    for name, make in (("layer_corr", layer_corr_figure), ("channel_corr", channel_corr_figure)):
        if redraw or not (fig_dir / f"{name}.png").is_file():
            save(make(runs), fig_dir, name)
    return runs


def report_body(out: Path, redraw: bool = False) -> str:
    """The report of a cifar10 reproduce dir: teachers, per-multi student accuracy and rho per layer, figures."""
    return conv_report(out, redraw, NAME, CAPTIONS)


def conv_report(out: Path, redraw: bool, name: str, captions: dict[str, str]) -> str:
    """The HTML of 4.4's protocol in a reproduce dir of `name`: teachers, students per multi, figures, wall times."""
    from ...store import read_json

    info = read_json(out / "reproduce.json")
    runs = _stored_runs(out, redraw, name)
    per_multi = summarize(runs)["per_multi"]
    n_layers = max(len(r["rho_mean"]) for r in per_multi.values())
    students = [
        [
            m,
            len(runs[float(m)].config.seeds),
            ", ".join(map(str, runs[float(m)].summary.get("student_widths", []))),
            f"{r['accuracy_mean']:.4g} ± {r['accuracy_std']:.3g}",
            *(f"{a:.4g} ± {b:.3g}" for a, b in zip(r["rho_mean"], r["rho_std"])),
        ]
        for m, r in per_multi.items()
    ]
    t, pr = info.get("teacher", {}), info.get("pruned", {})
    teachers = [
        ["teacher (trained on labels)", t.get("accuracy"), ", ".join(map(str, t.get("widths", []))), ""],
        [
            "pruned teacher (fine-tuned; the students' teacher)",
            pr.get("accuracy"),
            ", ".join(map(str, pr.get("active_widths", []))),
            ", ".join(map(str, pr.get("ratios", []))),
        ],
    ]
    seeds, configs = [], []
    for multi, run in sorted(runs.items()):
        header, rows = page.seed_table(run.summary, [f"{multi:g}"])
        seeds += rows
        configs.append(
            f"<details><summary>runs/{page.escape(run.path.name)}/config.yaml</summary>"
            f"<pre>{page.escape((run.path / 'config.yaml').read_text())}</pre></details>"
        )
    stage = [[k, v] for k, v in info.get("stage_seconds", {}).items()]
    first = runs[min(runs)].summary
    student_header = ["multi", "seeds", "student channels per layer", "accuracy"]
    student_header += [f"rho layer {l}" for l in range(1, n_layers + 1)]
    train_seconds = sum(float(r.summary.get("wall_time_s", 0.0)) for r in runs.values())
    override_text = " ".join(info.get("overrides", [])) or "none"
    return f"""<h2>Teachers</h2>
{page.table(["", "test accuracy", "active channels per layer", "pruned fraction per layer"], teachers, {1})}
<h2>Students per multi</h2>
<p class="small">At each run's last evaluation: mean ± std (ddof 0) over seeds of the test accuracy and, per conv layer,
of rho = the mean over active teacher channels of the best student correlation.</p>
{page.table(student_header, students, {1})}
<h2>Figures</h2>
{page.figures_html(out, ["layer_corr", "channel_corr"], captions)}
<h2>Per-seed summary</h2>
<div class='wide'>{page.table(["multi", *header], seeds, page.numeric_columns(seeds))}</div>
<h2>Training path</h2>
{page.table(["", "value"], page.path_rows(first))}
<h2>Wall time</h2>
{page.table(["stage", "seconds (last invocation)"], stage, {1})}
<p class="small">Student training summed over runs (each run's own clock): {train_seconds:.1f} s.</p>
<h2>Configuration</h2>
<p>{page.escape(info.get("config", ""))}, overrides: <code>{page.escape(override_text)}</code></p>
{"".join(configs)}
<h2>Versions</h2>
{page.versions_table(first)}"""


EXPERIMENT = Experiment(NAME, CAPTIONS, run=run, report_body=report_body, dry_run=dry_run)
