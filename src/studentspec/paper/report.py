"""`studentspec report DIR`: a self-contained DIR/report.html of any result, and the README's claims table.

DIR may be a run dir (`studentspec run`), a sweep dir (`studentspec sweep`) or a reproduce dir of any
registered experiment (`studentspec reproduce NAME`, paper/experiments/). The page embeds its figures
as base64 PNG and uses no external file, script, font or style (`paper.page`), so it can be mailed or
archived alone. Everything comes from stored files, never retrained: missing figures (or all, with
reanalyze) are drawn from the stored tables; for a reproduce dir without claims.json, or with
reanalyze, claims and figures are recomputed from the stored run dirs (`analysis.analyze`); an
experiment with its own report body (cifar10) draws its own page. The only files written are
report.html, the figures of a run dir (its figures/, as `studentspec plot`) or of a reproduce dir,
and a sweep's REPORT_FIGURES folder (the chosen point's run figures; job dirs are never written).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import ConfigError, parse_yaml
from ..ensemble.atomic import atomic_write
from ..store import StoreError, check_figures, check_files, claim_files, read_json
from .experiments import EXPERIMENTS
from .page import CSS, escape, figures_html, fmt, numeric_columns, page, path_rows, seed_table, table, versions_table

# One run's figures (figures.plot_run), in the order shown (run_captions adds the metrics'); any other figure in the
# folder follows, sorted.
RUN_CAPTIONS = {
    "lshape": "L-shape: fan-out norm vs best-teacher correlation of every student node at the last step.",
    "teacher_corr": "Best correlation of each teacher node vs step, "
    "coloured by fan-out norm; dead teacher nodes dotted.",
    "mse": "log10 MSE vs step, mean ± std over seeds, per split.",
    "converge": "After `studentspec converge`: each student's angle to its nearest teacher vs its fan-out norm.",
}


def run_captions() -> dict[str, str]:
    """RUN_CAPTIONS with the figures the registered metrics declare (theory/metric.py METRICS) after mse."""
    from ..theory.metric import METRICS  # here: importing this module does not import the trainer

    base = list(RUN_CAPTIONS.items())
    metric = [(m.figure.name, m.figure.caption) for m in METRICS.values() if m.figure is not None]
    return dict(base[:3] + metric + base[3:])


REPORT = "report.html"
REPORT_FIGURES = "report_figures"  # a sweep report's figures of its chosen point, inside the sweep dir


def claims_html(claims: list[dict[str, Any]]) -> str:
    """The claims table: verdict cells coloured, nothing dropped."""
    rows = []
    for c in claims:
        verdict = "PASS" if c["passed"] else "FAIL"
        rows.append(
            f"<tr><td class='{verdict.lower()}'>{verdict}</td><td>{escape(c['name'])}</td>"
            f"<td class='num'>{escape(fmt(c['value']))}</td>"
            f"<td>{escape(c['threshold'])}</td><td>{escape(c['statistic'])}</td>"
            f"<td>{escape(c['justification'])}</td><td class='small'>{escape(c.get('detail', ''))}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>" for h in ("verdict", "claim", "value", "threshold", "statistic", "why this threshold", "detail")
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def seed_rows(sweep_dir: Path) -> tuple[list[str], list[list[Any]]]:
    """Per finished job and seed: the grid point and the final numbers of its summary.json."""
    manifest = read_json(sweep_dir / "sweep.json")
    header: list[str] = []
    rows: list[list[Any]] = []
    keys = list(dict.fromkeys(k for job in manifest["jobs"] for k in job["point"]))
    for job in manifest["jobs"]:
        path = sweep_dir / "jobs" / job["id"] / "summary.json"
        if not path.is_file():
            rows.append([*(job["point"].get(k, "") for k in keys), "(not finished)"])
            continue
        info = read_json(path)
        for seed, entry in info["per_seed"].items():
            fields = {k: v for k, v in entry.items() if not k.startswith("time_to_specialize")}
            if not header:
                header = [*keys, "seed", *fields]
            rows.append([*(job["point"].get(k, "") for k in keys), seed, *fields.values()])
    return header or [*keys, "status"], rows


def render(out: Path, captions: dict[str, str]) -> str:
    """The report page of one reproduce dir of a sweep
    experiment (claims, figures with `captions`, sweeps), as a string."""
    info, doc = read_json(out / "reproduce.json"), read_json(out / "claims.json")
    s = doc["summary"]
    calls = info.get("invocations", [])
    wall = [
        [
            c.get("started"),
            c.get("wall_time_s"),
            c.get("train_wall_time_s"),
            ", ".join(
                f"{k}: {v['run']} run, {v['skipped']} skipped, {len(v['failed'])} failed"
                for k, v in c.get("parts", {}).items()
            ),
        ]
        for c in calls
    ]
    job_time = 0.0
    sections = []
    for cfg in sorted((out / "configs").glob("*.yaml")):
        sections.append(f"<h3>{escape(cfg.stem)}</h3><pre>{escape(cfg.read_text())}</pre>")
    seed_tables = []
    for sweep_dir in (
        sorted(p for p in (out / "sweep").iterdir() if (p / "sweep.json").is_file()) if (out / "sweep").is_dir() else []
    ):
        header, rows = seed_rows(sweep_dir)
        for job in (sweep_dir / "jobs").glob("*/summary.json"):
            job_time += float(read_json(job).get("wall_time_s", 0.0))
        numeric = {i for i, h in enumerate(header) if h.endswith("mse") or h.startswith(("rho_mean", "n_specialized"))}
        seed_tables.append(
            f"<details><summary>{escape(sweep_dir.name)}: {len(rows)} rows</summary>"
            f"{table(header, rows, numeric)}</details>"
        )
    versions = info.get("versions", {})
    title = f"studentspec — {info['experiment']} ({info['scale']} scale)"
    verdict = "pass" if s["failed"] == 0 else "fail"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="{verdict}">{s["passed"]} of {s["total"]} claims pass, {s["failed"]} fail.</p>
<p class="small">Generated {escape(time.strftime("%Y-%m-%d %H:%M:%S"))} from the stored results in \
{escape(out.resolve())}.
Regenerate with <code>studentspec report {escape(out)}</code> (no retraining).</p>
<h2>Claims</h2>
{claims_html(doc["claims"])}
<h2>Figures</h2>
{figures_html(out, doc.get("figures", []), captions)}
<h2>Wall time</h2>
{table(["started", "wall time (s)", "sweeps (s)", "jobs"], wall, {1, 2})}
<p class="small">Training time summed over jobs (each job's own clock): {job_time:.1f} s. \
Figures and claims last computed in {doc.get("wall_time_s", 0)} s.</p>
<h2>Per-seed summary</h2>
{"".join(seed_tables)}
<h2>Configuration</h2>
{"".join(sections)}
<h2>Versions</h2>
{table(["package", "version"], [[k, v] for k, v in versions.items()])}
</body></html>
"""


KINDS = {"reproduce": "reproduce dir", "run": "run dir", "sweep": "sweep dir"}


def result_kind(out: Path) -> str:
    """What `out` holds (a key of KINDS); StoreError (one line) naming what it is not otherwise."""
    if not out.is_dir():
        raise StoreError(f"{out}: directory not found")
    if (out / "reproduce.json").is_file():
        return "reproduce"
    if (out / "summary.json").is_file() and (out / "config.yaml").is_file():
        return "run"
    if (out / "sweep.json").is_file():
        return "sweep"
    raise StoreError(
        f"{out}: not a run, sweep or reproduce dir (no summary.json with config.yaml, no sweep.json, no reproduce.json)"
    )


def _figure_names(folder: Path) -> list[str]:
    """The PNG figures in `folder`: plot_run's in run_captions() order, then any other, sorted."""
    names = {p.stem for p in folder.glob("*.png") if p.is_file()} if folder.is_dir() else set()
    captions = run_captions()
    return [n for n in captions if n in names] + sorted(names - set(captions))


def render_run(out: Path, redraw: bool = False) -> str:
    """The report page of one run dir; its figures/ drawn first (figures.plot_run) when missing or with redraw."""
    from ..store import load_run
    from .figures import plot_run

    summary = read_json(out / "summary.json")
    fig_dir = out / "figures"
    check_figures(fig_dir)
    if redraw or not all((fig_dir / f"{n}.png").is_file() for n in ("lshape", "teacher_corr", "mse")):
        plot_run(load_run(out), fig_dir)
    header, rows = seed_table(summary)
    wall = [
        ["training (wall_time_s)", summary.get("wall_time_s")],
        ["of which evaluation (eval_time_s)", summary.get("eval_time_s")],
    ]
    body = f"""<h2>Per-seed summary</h2>
<p class="small">Final numbers of summary.json (eval split unless named train_).</p>
<div class='wide'>{table(header, rows, numeric_columns(rows))}</div>
<h2>Figures</h2>
{figures_html(out, _figure_names(fig_dir), run_captions())}
<h2>Training path</h2>
{table(["", "value"], path_rows(summary))}
<h2>Wall time</h2>
{table(["", "seconds"], [r for r in wall if r[1] is not None], {1})}
<h2>Configuration</h2>
<pre>{escape((out / "config.yaml").read_text())}</pre>
<h2>Versions</h2>
{versions_table(summary)}"""
    return page(f"studentspec — run {out.resolve().name}", out, body)


def swept_keys(manifest: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The keys taking more than one value over a sweep's jobs, and the fixed overrides {key: value}."""
    values: dict[str, list[str]] = {}
    for job in manifest["jobs"]:
        for k, v in job["point"].items():
            values.setdefault(k, [])
            if v not in values[k]:
                values[k].append(v)
    return [k for k, v in values.items() if len(v) > 1], {k: v[0] for k, v in values.items() if len(v) == 1}


def _final(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of `split` at the last evaluated step of each job and seed."""
    df = df[df["split"] == split]
    return df[df["step"] == df.groupby(["job", "seed"])["step"].transform("max")]


def sweep_finals(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per finished job and seed: final eval (and train) MSE and, per layer, the fraction of active teacher
    nodes specialized (eval split, best correlation above the run's eval.threshold)."""
    sc = tables["scalars"]
    out = _final(sc, "eval").set_index(["job", "seed"])[["mse"]].rename(columns={"mse": "eval_mse"})
    train = _final(sc, "train")
    if len(train):
        out = out.join(train.set_index(["job", "seed"])["mse"].rename("train_mse"))
    te = _final(tables["teachers"], "eval")
    if "active" in te.columns:  # pruned teacher channels are no teachers
        te = te[te["active"].astype(bool)]
    if len(te):
        frac = te.groupby(["job", "seed", "layer"])["specialized"].mean().unstack("layer")
        frac.columns = [f"specialized_{int(l)}" for l in frac.columns]
        out = out.join(frac)
    return out.reset_index()


def _mean_std(values: pd.Series) -> str:
    """'mean ± std' over the finite values (std with ddof 0); 'n/a' when there is none."""
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return f"{v.mean():.4g} ± {v.std():.3g}" if len(v) else "n/a"


def _point_job(out: Path, manifest: dict[str, Any], point: str | None) -> dict[str, Any]:
    """The first finished job at `point` ('key=value,...'; None: the sweep's first finished job)."""
    from ..sweep.grid import split_values

    finished = [j for j in manifest["jobs"] if (out / "jobs" / j["id"] / "summary.json").is_file()]
    if point is None:
        if not finished:
            raise StoreError(f"{out}: the sweep has no finished job yet")
        return finished[0]
    keys = list(dict.fromkeys(k for j in manifest["jobs"] for k in j["point"]))
    wanted: dict[str, Any] = {}
    for item in split_values(point):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ConfigError(f"--point: items must look like key=value, got {item!r}")
        if key not in keys:
            raise ConfigError(f"--point: {key} is not a key of this sweep (its keys: {', '.join(keys)})")
        wanted[key] = parse_yaml(raw)
    match = [
        j
        for j in manifest["jobs"]
        if set(wanted) <= set(j["point"]) and all(parse_yaml(j["point"][k]) == v for k, v in wanted.items())
    ]
    if not match:
        raise ConfigError(f"--point: no job of {out} at {point}")
    done = [j for j in match if j in finished]
    if not done:
        raise StoreError(f"{out}: no finished job at --point {point} yet")
    return done[0]


def _point_figures(out: Path, job: dict[str, Any]) -> list[str]:
    """Draw the run figures of one job into out/REPORT_FIGURES
    (never into the job dir); older figures there are removed."""
    from ..store import load_run, remove_stale
    from .figures import plot_run

    folder = out / REPORT_FIGURES
    check_figures(folder)
    paths = plot_run(load_run(out / "jobs" / job["id"]), folder)
    remove_stale(
        folder, [p.name for p in paths]
    )  # another point's figures (e.g. its converge or theory figure), if ours
    return [p.stem for p in paths if p.suffix == ".png"]


def render_sweep(out: Path, point: str | None = None) -> str:
    """The report page of a sweep dir: per swept key, final
    numbers per value (other keys marginalized); a point's figures."""
    import yaml

    from ..sweep.grid import load_sweep

    manifest = read_json(out / "sweep.json")
    job = _point_job(out, manifest, point)  # before any work: a bad --point draws nothing
    swept, fixed = swept_keys(manifest)
    finals = sweep_finals(load_sweep(out))
    raw = {j["id"]: j["point"] for j in manifest["jobs"]}
    measures = [c for c in ("eval_mse", "train_mse") if c in finals] + sorted(
        (c for c in finals if c.startswith("specialized_")), key=lambda c: int(c.rsplit("_", 1)[1])
    )
    labels = {"eval_mse": "final eval MSE", "train_mse": "final train MSE"}
    labels |= {c: f"specialized, layer {c.rsplit('_', 1)[1]}" for c in measures if c.startswith("specialized_")}
    key_tables = []
    keys: list[str | None] = [*swept] or [None]  # None: one table over all jobs
    for key in keys:
        order = list(dict.fromkeys(j["point"][key] for j in manifest["jobs"])) if key else ["all"]
        value = finals["job"].map(lambda i, key=key: raw[i][key] if key else "all")
        rows = []
        for v in order:
            part = finals[value == v]
            rows.append([v, len(part), *(_mean_std(part[c]) if len(part) else "n/a" for c in measures)])
        key_header = [key or "", "seeds finished", *(labels[c] for c in measures)]
        key_tables.append(
            f"<h3 id='key-{escape(key or 'all')}'>{escape(key or 'all jobs (no swept key)')}</h3>"
            + f"<div class='wide'>{table(key_header, rows, {1})}</div>"
        )
    summaries = {
        j["id"]: read_json(out / "jobs" / j["id"] / "summary.json")
        for j in manifest["jobs"]
        if (out / "jobs" / j["id"] / "summary.json").is_file()
    }
    jobs = [
        [
            j["id"],
            *(j["point"].get(k, "") for k in swept),
            ", ".join(map(str, j["seeds"])),
            "finished" if j["id"] in summaries else "not finished",
            summaries.get(j["id"], {}).get("wall_time_s"),
            len(summaries.get(j["id"], {}).get("diverged") or {}),
        ]
        for j in manifest["jobs"]
    ]
    names = _point_figures(out, job)
    here = ", ".join(f"{k}={job['point'][k]}" for k in swept) or "the only point"
    total = sum(float(s.get("wall_time_s", 0.0)) for s in summaries.values())
    fixed_text = ", ".join(f"{k}={v}" for k, v in fixed.items()) or "none"
    job_header = ["job", *swept, "seeds", "status", "wall time (s)", "diverged seeds"]
    body = f"""<p>{len(manifest["jobs"])} jobs, {len(summaries)} finished ({len(finals)} seeds with final numbers). \
Swept keys: {escape(", ".join(swept) or "none")}.
Fixed overrides: {escape(fixed_text)}.</p>
<h2>Per swept key</h2>
<p class="small">Per value of one key, over every finished seed of every point with that value \
(the other keys marginalized):
mean ± std (ddof 0) of the final numbers at each job's last evaluation, eval split unless named train;
specialized = fraction of the layer's active teacher nodes whose best eval correlation is above \
the run's eval.threshold.</p>
{"".join(key_tables)}
<h2>Figures of one point</h2>
<p>{escape(here)}: job {escape(job["id"])} (seeds {escape(", ".join(map(str, job["seeds"])))}); choose another with
<code>studentspec report {escape(out)} --point key=value,...</code>.</p>
{figures_html(out, names, run_captions(), folder=REPORT_FIGURES)}
<h2>Jobs</h2>
<div class='wide'>{table(job_header, jobs, {len(swept) + 3, len(swept) + 4})}</div>
<p class="small">Training time summed over finished jobs (each job's own clock): {total:.1f} s.</p>
<h2>Training path</h2>
<p class="small">Of the job drawn above.</p>
{table(["", "value"], path_rows(summaries[job["id"]]))}
<h2>Configuration</h2>
<p>{escape(manifest.get("config") or "no config file (defaults)")}, grid:</p>
<pre>{escape(yaml.safe_dump(manifest.get("grid", {}), sort_keys=False, default_flow_style=None))}</pre>
<pre>{escape(manifest.get("config_text", ""))}</pre>
<h2>Versions</h2>
{versions_table(summaries[job["id"]])}"""
    return page(f"studentspec — sweep {out.resolve().name}", out, body)


def render_reproduce(out: Path, reanalyze: bool = False) -> str:
    """The report page of a reproduce dir: its experiment's own report body, else claims, figures and sweeps (analyzed
    first when claims.json is missing or with reanalyze)."""
    info = read_json(out / "reproduce.json")
    experiment = EXPERIMENTS.get(info["experiment"])
    if experiment is not None and experiment.report_body is not None:
        return page(
            f"studentspec — {experiment.name} ({info['scale']} scale)", out, experiment.report_body(out, reanalyze)
        )
    if reanalyze or not (out / "claims.json").is_file():
        if experiment is None or experiment.analyze is None:
            raise StoreError(
                f"{out}: no claims.json and no analysis for experiment {info['experiment']!r} "
                f"(report knows {', '.join(EXPERIMENTS)})"
            )
        from .analysis import analyze  # loads torch: only where claims are recomputed

        analyze(out)
    return render(out, experiment.captions if experiment is not None else {})


def write_report(out: str | Path, reanalyze: bool = False, point: str | None = None) -> Path:
    """Write OUT/report.html for a run, sweep or reproduce dir
    (reanalyze: redraw figures, recompute claims, from stored runs)."""
    out = Path(out)
    kind = result_kind(out)
    if point is not None and kind != "sweep":
        raise ConfigError(f"--point: only for a sweep dir; {out} is a {KINDS[kind]}")
    path = out / REPORT
    check_files(out, [REPORT])  # before any work: never over a page studentspec has no record of writing
    if kind == "reproduce":
        text = render_reproduce(out, reanalyze)
    elif kind == "run":
        text = render_run(out, reanalyze)
    else:
        text = render_sweep(out, point)
    claim_files(out, [REPORT])
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def markdown_table(dirs: list[str | Path]) -> str:
    """The README's table of claims (and wall times) from reproduce dirs' claims.json and reproduce.json."""
    lines = ["| experiment | claim | value | threshold | verdict |", "|---|---|---|---|---|"]
    times = ["| experiment | scale | wall time | claims passed |", "|---|---|---|---|"]
    for d in dirs:
        d = Path(d)
        doc, info = read_json(d / "claims.json"), read_json(d / "reproduce.json")
        for c in doc["claims"]:
            lines.append(
                f"| {doc['experiment']} | {c['name']} | {fmt(c['value'])} | {c['threshold']} | "
                f"{'PASS' if c['passed'] else '**FAIL**'} |"
            )
        calls = info.get("invocations", [])
        # only an uninterrupted invocation (every job trained, none resumed) measures the experiment's wall time
        full = [
            c
            for c in calls
            if c.get("parts") and all(p["skipped"] == 0 and p["run"] == p["jobs"] for p in c["parts"].values())
        ]
        wall = f"{full[-1]['wall_time_s']:.0f} s" if full else "n/a (resumed)"
        times.append(
            f"| {doc['experiment']} | {doc['scale']} | {wall} | {doc['summary']['passed']}/{doc['summary']['total']} |"
        )
    return "\n".join([*times, "", *lines])
