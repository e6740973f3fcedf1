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

CAPTIONS = {
    "layer_corr": "Conv students (4.4 protocol): per layer, mean over active teacher channels of the best student "
    "correlation vs epoch, mean ± std over seeds; one panel per multi.",
    "channel_corr": "Conv students (4.4 protocol): best correlation of every active teacher channel vs epoch (mean "
    "over seeds), coloured by fan-out norm; rows = multi, columns = layer.",
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

    dataset = dataset or DATASETS[0]
    if dataset not in DATASETS:
        raise ConfigError(f"--dataset: reproduce images takes one of {', '.join(DATASETS)}, got {dataset!r}")
    start = time.perf_counter()
    path = cifar10.config_path(scale)
    overrides = list(overrides or [])
    settings = _settings(scale, dataset, overrides)
    cfg, data = _config_and_data(path, settings, dataset)
    out = Path(out_dir)
    cifar10.claim_out(out, {"experiment": NAME, "scale": scale, "dataset": dataset})
    times: dict[str, float] = {}
    stage = cifar10.stage_runner(times, progress)
    conv, runs = cifar10.protocol(out, path, settings, cfg, data, scale=scale, stage=stage, progress=progress)
    claims = conv_claims(runs)
    wall = round(time.perf_counter() - start, 1)
    write_json(
        out / "claims.json",
        {
            "experiment": NAME,
            "scale": scale,
            "claims": claims,
            "summary": summarize(claims),
            "figures": [Path(p).stem for p in conv["figures"] if str(p).endswith(".png")],
            "wall_time_s": wall,
        },
    )
    info = (
        {"experiment": NAME, "scale": scale, "dataset": dataset, "per_multi": conv.pop("per_multi")}
        | {"config": str(path), "overrides": overrides, "stage_seconds": times, "wall_time_s": wall}
        | conv
        | {"data": {"kind": cfg.data.kind, "source": data.source, "shape": list(data.shape)}}
    )
    write_json(out / "reproduce.json", info)
    if progress:
        passed = sum(c["passed"] for c in claims)
        print(f"images ({dataset}, {scale}): {passed}/{len(claims)} claims pass; wall time {wall:.0f} s")
    return info


def finals(runs: dict[float, Any]) -> Any:
    """Each run's last-evaluation scalars (a row per seed) with a student.multi column: the claims' input."""
    import pandas as pd

    from ..claims import MULTI

    frames = []
    for multi, run in sorted(runs.items()):
        sc = run.scalars
        frames.append(sc[sc["step"] == sc["step"].max()].assign(**{MULTI: multi}))
    return pd.concat(frames, ignore_index=True)


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
    return f"<h2>Claims</h2>\n{head}\n{claims}\n" + cifar10.conv_report(out, redraw, NAME, CAPTIONS)


EXPERIMENT = Experiment(NAME, CAPTIONS, run=run, report_body=report_body, datasets=DATASETS)
