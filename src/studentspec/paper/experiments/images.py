"""docs/model.md 4.4's protocol on an image set of choice (Fashion-MNIST by default), checked against its claims.

`run(out_dir, scale, overrides, dataset=...)` is what `studentspec reproduce images --dataset D` calls. Part 1 is
the CIFAR-10 experiment's pipeline (`cifar10.protocol`, one definition): a conv teacher trained on the true
labels, pruned by fan-out and fine-tuned, students of multi 1, 2, 5 learning its outputs. Part 2 (`mlp_part`)
compares one random deep MLP teacher on the real flattened images with the same teacher on Gaussian inputs of
the same mean and covariance. Every stage is kept in out_dir and reused when valid, so an interrupted
reproduction resumes where it stopped:

    out_dir/teacher.pt, teacher_pruned.pt, runs/multi_<m>/, runs/mlp/<inputs>_multi_<m>/, figures/,
    claims.json, reproduce.json

`report_body` is its part of `studentspec report out_dir`: claims, the conv protocol's tables, the MLP comparison.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from ...config import ConfigError, load_config
from .. import page
from . import cifar10
from .base import Experiment

NAME = "images"
DATASETS = ("fashion_mnist", "mnist", "cifar10")  # --dataset; the first is the default
# per data set, settings applied over the cifar10 presets. The idx sets (28x28 grey) have no default augmentation:
# the original code augmented CIFAR-10 only (docs/model.md 4.6), and a flipped digit is another digit
DATASET_SETTINGS = {
    "fashion_mnist": ["data.kind=fashion_mnist", "data.root=null", "data.augment=false"],
    "mnist": ["data.kind=mnist", "data.root=null", "data.augment=false"],
    "cifar10": [],
}

# Part 2, one random deep MLP teacher on real flattened images vs on Gaussian inputs of their mean and covariance: the
# configs/images_mlp_quick.yaml preset (quick), shrunk for tiny, grown for paper (4.3's widths, all images, 100
# epochs); per input kind the settings over it, then one run per multi
MLP_PRESET = "images_mlp_quick.yaml"
MLP_SCALES = {
    "tiny": ["teacher.widths=[4,4,4]", "data.n_train=60", "data.n_eval=30", "train.epochs=2", "eval.every=1"],
    "quick": [],
    "paper": [
        "seeds=[1,2,3]",
        "teacher.widths=[50,75,100,125]",
        "data.n_train=60000",
        "data.n_eval=10000",
        "train.epochs=100",
    ],
}
# Part 2's dry run times its runs on at most this many training and evaluation samples (evaluations and the build grow
# with them on the calibrated lines; at paper size a timed run took minutes)
MLP_TIMED = (1000, 500)
MLP_MULTIS = {"tiny": [1.0, 2.0], "quick": [1.0, 2.0, 5.0], "paper": [1.0, 2.0, 5.0]}
INPUTS = ("real", "gaussian")

CAPTIONS = {
    "layer_corr": "Conv students (4.4 protocol): per layer, mean over active teacher channels of the best student "
    "correlation vs epoch, mean ± std over seeds; one panel per multi.",
    "channel_corr": "Conv students (4.4 protocol): best correlation of every active teacher channel vs epoch (mean "
    "over seeds), coloured by fan-out norm; rows = multi, columns = layer.",
    "mlp_inputs": "One random deep MLP teacher (4.3's recipe) on the real flattened images (left) and on Gaussian "
    "inputs of the same mean and covariance (right): final rho_mean per layer vs multi, mean ± std over seeds.",
}


def _settings(scale: str, dataset: str, overrides: list[str]) -> list[str]:
    """The overrides over the cifar10 preset of `scale`: tiny's, the data set's, then the user's."""
    tiny = cifar10.TINY_OVERRIDES if scale == "tiny" else []
    return [*tiny, *DATASET_SETTINGS[dataset], *overrides]


def _config_and_data(path: Path, settings: list[str], dataset: str) -> tuple[Any, Any]:
    """The experiment's config and its images; ConfigError (one line, how to get them) when they are missing."""
    from ...images import load_images

    cfg = load_config(path, settings)
    if cfg.data.kind != dataset:
        raise ConfigError(
            f"data.kind: reproduce images --dataset {dataset} needs data.kind={dataset}, got {cfg.data.kind}"
        )
    return cfg, load_images(cfg.data.kind, cfg.data.root)


def run(
    out_dir: str | Path,
    scale: str = "quick",
    overrides: list[str] | None = None,
    *,
    progress: bool = True,
    dataset: str | None = None,
) -> dict[str, Any]:
    """The 4.4 protocol on `dataset`'s images, the MLP comparison, claims.json and reproduce.json in out_dir.

    ConfigError before any work when the data set is missing (saying how to get it), `dataset` or an
    override is bad; StoreError when out_dir holds another experiment, scale or data set.
    """
    from ...store import write_json
    from ..claims import summarize
    from ..style import save

    dataset = dataset or DATASETS[0]
    if dataset not in DATASETS:
        raise ConfigError(f"--dataset: reproduce images takes one of {', '.join(DATASETS)}, got {dataset!r}")
    start = time.perf_counter()
    path = cifar10.config_path(scale)
    overrides = list(overrides or [])
    settings = _settings(scale, dataset, overrides)
    cfg, data = _config_and_data(path, settings, dataset)
    mlp_cfgs = mlp_configs(scale, dataset, overrides)
    out = Path(out_dir)
    cifar10.claim_out(out, {"experiment": NAME, "scale": scale, "dataset": dataset})
    times: dict[str, float] = {}
    stage = cifar10.stage_runner(times, progress)
    conv, runs = cifar10.protocol(out, path, settings, cfg, data, scale=scale, stage=stage, progress=progress)
    mlp_runs = mlp_part(out, mlp_cfgs, stage=stage, progress=progress)
    figures = [*conv["figures"], *(str(p) for p in save(inputs_figure(mlp_runs), out / "figures", "mlp_inputs"))]
    conv["figures"] = figures
    claims = conv_claims(runs) + mlp_claims(mlp_runs)
    wall = round(time.perf_counter() - start, 1)
    write_json(
        out / "claims.json",
        {
            "experiment": NAME,
            "scale": scale,
            "claims": claims,
            "summary": summarize(claims),
            "figures": [Path(p).stem for p in figures if str(p).endswith(".png")],
            "wall_time_s": wall,
        },
    )
    info = (
        {"experiment": NAME, "scale": scale, "dataset": dataset, "per_multi": conv.pop("per_multi")}
        | {"config": str(path), "overrides": overrides, "stage_seconds": times, "wall_time_s": wall}
        | conv
        | {"data": {"kind": cfg.data.kind, "source": data.source, "shape": list(data.shape)}}
        | {"mlp": mlp_summary(mlp_runs)}
    )
    write_json(out / "reproduce.json", info)
    if progress:
        passed = sum(c["passed"] for c in claims)
        print(f"images ({dataset}, {scale}): {passed}/{len(claims)} claims pass; wall time {wall:.0f} s")
    return info


def mlp_configs(scale: str, dataset: str, overrides: list[str]) -> dict[str, dict[float, Any]]:
    """Part 2's configs, per input kind (real images, Gaussian of their mean and covariance) and multi, validated
    and resolved by the pipeline (input_dim from the images) before any work."""
    from ... import pipelines

    preset = cifar10.config_path(scale).parent / MLP_PRESET
    if not preset.is_file():
        raise ConfigError(f"{preset}: preset not found (run from a source checkout of studentspec)")
    base = [*MLP_SCALES[scale], f"data.kind={dataset}", *overrides]
    kinds = {"real": base, "gaussian": [*base, "data.kind=gaussian_like", f"data.like={dataset}"]}
    return {
        inputs: {m: pipelines.load_config(preset, [*settings, f"student.multi={m}"]) for m in MLP_MULTIS[scale]}
        for inputs, settings in kinds.items()
    }


def dry_run(scale: str, dataset: str | None = None) -> str:
    """`reproduce images --scale S [--dataset D] --dry-run`: the conv protocol's stages (conv/cost.py) and Part 2's MLP
    runs (sweep/cost.py, timed on Gaussian stand-ins of the images' dimension), each with epochs, steps, samples,
    GFLOP and projected seconds on this machine, and their total; the data set need not be on disk."""
    from ...conv.cost import table

    dataset = dataset or DATASETS[0]
    if dataset not in DATASETS:
        raise ConfigError(f"--dataset: reproduce images takes one of {', '.join(DATASETS)}, got {dataset!r}")
    path = cifar10.config_path(scale)
    title = f"reproduce {NAME} --scale {scale} --dataset {dataset}"
    cfg, data, stages, lines = cifar10.protocol_cost(path, _settings(scale, dataset, []), scale, title)
    if cfg.data.kind != dataset:
        raise ConfigError(
            f"data.kind: reproduce images --dataset {dataset} needs data.kind={dataset}, got {cfg.data.kind}"
        )
    mlp, notes = _mlp_cost(scale, data)
    gaussian = "the moments of Part 2's Gaussian inputs (a d x d eigendecomposition)"
    return table(lines[0], stages + mlp, [*lines[1:], *notes, f"{cifar10.NOT_PROJECTED}, {gaussian}"])


def _mlp_cost(scale: str, data: Any) -> tuple[list[Any], list[str]]:
    """Part 2's runs as cost stages: its configs with Gaussian inputs of the images' dimension in place of the images
    (the same MLP, steps and evaluations; no data on disk), calibrated on the smallest and largest multi as
    `sweep --dry-run` calibrates a family."""
    import math

    from ... import pipelines
    from ...conv.cost import Stage
    from ...sweep.cost import calibrate, job_cost

    preset = cifar10.config_path(scale).parent / MLP_PRESET
    if not preset.is_file():
        raise ConfigError(f"{preset}: preset not found (run from a source checkout of studentspec)")
    stand_in = [*MLP_SCALES[scale], "data.kind=gaussian", f"input_dim={math.prod(data.shape)}", "output_dim=10"]
    configs = {m: pipelines.load_config(preset, [*stand_in, f"student.multi={m}"]) for m in MLP_MULTIS[scale]}
    listed = list(configs.values())
    threads = listed[0].train.threads or 1
    n_train, n_eval = (min(n, most) for n, most in zip((listed[0].data.n_train, listed[0].data.n_eval), MLP_TIMED))
    smaller = [f"data.n_train={n_train}", f"data.n_eval={n_eval}"]
    timed = [pipelines.load_config(preset, [*stand_in, f"student.multi={m}", *smaller]) for m in configs]
    rates, picks = calibrate(timed, threads=threads)
    stages = []
    for inputs in INPUTS:
        for multi, run_cfg in configs.items():
            job = job_cost(run_cfg)
            stages.append(
                Stage(
                    f"mlp {inputs} multi {multi:g}",
                    ",".join(map(str, run_cfg.student_widths)),
                    job.seeds,
                    run_cfg.train.epochs,
                    job.steps,
                    min(run_cfg.train.batch_size, run_cfg.data.n_train),
                    job.step_flops,
                    job.evals,
                    job.eval_flops,
                    rates.seconds(job),
                    n_train < run_cfg.data.n_train or n_eval < run_cfg.data.n_eval,  # evaluations and build
                )
            )
    at = f"{n_train:,} training / {n_eval:,} evaluation samples"
    notes = [
        f"timed mlp multi {listed[i].student.multi:g} (Gaussian stand-in, d = {listed[i].input_dim}, {at}, "
        f"{threads} thread(s)): {s.t_step * 1e3:.3f} ms/step, {s.t_eval:.3f} s/evaluation, "
        f"{s.t_fixed:.2f} s build + write"
        for i, s in zip(picks, rates.samples)
    ]
    if listed[0].data.n_train > data.n_train:
        notes.append(
            f"mlp: data.n_train {listed[0].data.n_train:,} exceeds {data.kind}'s {data.n_train:,} training images: "
            f"the run would stop at Part 2 (ConfigError)"
        )
    return stages, notes


def mlp_part(
    out: Path, configs: dict[str, dict[float, Any]], *, stage: Any, progress: bool
) -> dict[str, dict[float, Any]]:
    """Part 2: one MLP run per input kind and multi (runs/mlp/<inputs>_multi_<m>), a kept run reused when its config
    is the same.

    The teacher is the same draw from the same seeds (the deep recipe) on both kinds; its bias tuning and output
    standardization use each kind's own evaluation inputs, as any deep teacher's do.
    """
    from ... import pipelines
    from ...store import load_run

    runs: dict[str, dict[float, Any]] = {}
    for inputs, by_multi in configs.items():
        runs[inputs] = {}
        for multi, run_cfg in by_multi.items():
            run_dir = out / "runs" / "mlp" / f"{inputs}_multi_{multi:g}"

            def make(run_cfg: Any = run_cfg, run_dir: Path = run_dir) -> Any:
                pipelines.write_run(pipelines.train(run_cfg, progress), run_dir, overwrite=True)
                return load_run(run_dir)

            load = functools.partial(cifar10.load_matching, run_dir, run_cfg)
            runs[inputs][multi] = stage(f"mlp {inputs} multi {multi:g}", make, load)
    return runs


def finals(runs: dict[float, Any]) -> Any:
    """Each run's last-evaluation scalars (eval split; a row per seed) plus student.multi: the claims' input."""
    import pandas as pd

    from ..claims import MULTI

    frames = []
    for multi, run in sorted(runs.items()):
        sc = run.scalars
        if "split" in sc.columns:  # MLP runs evaluate train and eval sets
            sc = sc[sc["split"] == "eval"]
        frames.append(sc[sc["step"] == sc["step"].max()].assign(**{MULTI: multi}))
    return pd.concat(frames, ignore_index=True)


def mlp_claims(runs: dict[str, dict[float, Any]]) -> list[dict[str, Any]]:
    """4.4's over-realization claim on the MLP students, real images and Gaussian inputs each."""
    from .. import claims

    names = {"real": "mlp on real images", "gaussian": "mlp on Gaussian inputs like them"}
    return [claims.over_realization_rho(finals(runs[k]), label=names[k]) for k in INPUTS if runs.get(k)]


def mlp_summary(runs: dict[str, dict[float, Any]]) -> dict[str, Any]:
    """Per input kind and multi: final eval rho_mean per layer (mean, std over seeds) and eval MSE (mean)."""
    import numpy as np

    out: dict[str, Any] = {}
    for inputs, by_multi in runs.items():
        table = finals(by_multi)
        layers = sorted(int(c.rsplit("_", 1)[1]) for c in table.columns if c.startswith("rho_mean_"))
        out[inputs] = {
            f"{m:g}": {
                "rho_mean": [float(g[f"rho_mean_{l}"].mean()) for l in layers],
                "rho_std": [float(np.std(g[f"rho_mean_{l}"])) for l in layers],
                "mse": float(g["mse"].mean()),
            }
            for m, g in table.groupby("student.multi")
        }
    return out


def inputs_figure(runs: dict[str, dict[float, Any]]) -> Any:
    """Final rho_mean per layer vs multi (mean ± std over seeds); left real images, right Gaussian inputs like them."""
    from ..style import ordered_color, styled, subplots

    @styled
    def draw() -> Any:
        fig, axes = subplots(1, 2, sharey=True)
        summary = mlp_summary(runs)
        titles = {"real": "real images (flattened)", "gaussian": "Gaussian inputs, same mean and covariance"}
        for ax, inputs in zip(axes[0], INPUTS):
            by_multi = summary.get(inputs, {})
            multis = sorted(by_multi, key=float)
            n = len(by_multi[multis[0]]["rho_mean"]) if multis else 0
            for i in range(n):
                mean = [by_multi[m]["rho_mean"][i] for m in multis]
                std = [by_multi[m]["rho_std"][i] for m in multis]
                x = [float(m) for m in multis]
                ax.errorbar(
                    x, mean, yerr=std, marker="o", ms=3, capsize=2, color=ordered_color(i, n), label=f"layer {i + 1}"
                )
            ax.set(xscale="log", xlabel="multi", ylim=(0, 1.02), title=titles[inputs])
            ax.set_xticks([float(m) for m in multis], multis)
            ax.minorticks_off()
            ax.legend(loc="lower right")
        axes[0, 0].set_ylabel("final rho_mean (eval), mean ± std over seeds")
        fig.suptitle("one random deep MLP teacher (same seeds) on two kinds of inputs")
        return fig

    return draw()


def conv_claims(runs: dict[float, Any]) -> list[dict[str, Any]]:
    """The claims of 4.4 on the conv students' final evaluations."""
    from .. import claims

    table = finals(runs)
    return [
        claims.over_realization_rho(table),
        claims.over_realization_accuracy(table),
        claims.lower_layers_specialize_more(table),
    ]


def report_body(out: Path, redraw: bool = False) -> str:
    """The report of an images reproduce dir: claims, then the conv protocol's teachers, students and figures."""
    from ...store import read_json

    doc = read_json(out / "claims.json")
    info = read_json(out / "reproduce.json")
    data = info.get("data", {})
    head = (
        f"<p>Data set: <code>{page.escape(str(info.get('dataset', '')))}</code> from "
        f"<code>{page.escape(str(data.get('source', '')))}</code>, images {page.escape(str(data.get('shape', '')))}; "
        f"wall time {info.get('wall_time_s', 0):.0f} s (last invocation).</p>"
    )
    rows = [
        ["PASS" if c["passed"] else "FAIL", c["name"], c["value"], c["threshold"], c["statistic"], c["detail"]]
        for c in doc["claims"]
    ]  # paper.report's claims_html would import the experiment registry back (an import cycle)
    claims = page.table(["verdict", "claim", "value", "threshold", "statistic", "detail"], rows, {2})
    return (
        f"<h2>Claims</h2>\n{head}\n{claims}\n"
        + cifar10.conv_report(out, redraw, NAME, CAPTIONS)
        + _mlp_html(out, info.get("mlp", {}), redraw)
    )


def _mlp_html(out: Path, mlp: dict[str, Any], redraw: bool) -> str:
    """Part 2's section: final rho_mean per layer per input kind and multi, and its figure (drawn when missing)."""
    from ...store import check_figures, load_run
    from ..style import save

    if not mlp:
        return ""
    if redraw or not (out / "figures" / "mlp_inputs.png").is_file():
        runs: dict[str, dict[float, Any]] = {}
        for d in sorted((out / "runs" / "mlp").glob("*_multi_*")):
            inputs, multi = d.name.split("_multi_")
            runs.setdefault(inputs, {})[float(multi)] = load_run(d)
        check_figures(out / "figures")
        save(inputs_figure(runs), out / "figures", "mlp_inputs")
    rows = [
        [inputs, m, f"{r['mse']:.4g}", *(f"{a:.4g} ± {b:.3g}" for a, b in zip(r["rho_mean"], r["rho_std"]))]
        for inputs, by_multi in mlp.items()
        for m, r in by_multi.items()
    ]
    n = max(len(r) for r in rows) - 3
    header = ["inputs", "multi", "eval MSE", *(f"rho layer {l}" for l in range(1, n + 1))]
    return f"""<h2>MLP teacher on real images vs Gaussian inputs like them</h2>
<p class="small">runs/mlp/: one random deep MLP teacher (same seeds) on the flattened images and on Gaussian inputs of
their mean and covariance; final evaluation, mean ± std (ddof 0) over seeds.</p>
{page.table(header, rows, {1, 2})}
{page.figures_html(out, ["mlp_inputs"], CAPTIONS)}"""


EXPERIMENT = Experiment(NAME, CAPTIONS, run=run, report_body=report_body, datasets=DATASETS, dry_run=dry_run)
