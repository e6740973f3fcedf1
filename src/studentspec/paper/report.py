"""`studentspec report DIR`: a self-contained DIR/report.html of any result, and the README's claims table.

DIR may be a run dir (`studentspec run`), a sweep dir (`studentspec sweep`), a reproduce dir of the
MLP experiments (`studentspec reproduce two-layer|sample-complexity|deep`) or of cifar10. The page
embeds its figures as base64 PNG and uses no external file, script, font or style, so it can be
mailed or archived alone. Everything comes from stored files, never retrained: missing figures (or
all, with reanalyze) are drawn from the stored tables; for a reproduce dir without claims.json, or
with reanalyze, claims and figures are recomputed from the stored run dirs (`reproduce.analyze`).
The only files written are report.html, the figures of a run dir (its figures/, as `studentspec
plot`) or of a cifar10 reproduce dir, and a sweep's REPORT_FIGURES folder (the chosen point's run
figures; job dirs are never written).
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import ConfigError, parse_yaml
from ..ensemble.atomic import atomic_write
from ..store import StoreError, check_figures, check_files, claim_files, read_json

CSS = """
body { font-family: Georgia, 'DejaVu Serif', serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .3em .5em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-family: monospace; }
.pass { background: #dff3df; color: #135e13; font-weight: bold; } .fail { background: #f9dcdc; color: #8a1010; font-weight: bold; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; } figcaption { font-size: .9em; color: #555; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .8em; } .small { font-size: .85em; color: #555; }
.wide { overflow-x: auto; }
"""

CAPTIONS = {
    "lshape": "L-shape (4.1a): every student node at the end; x = best teacher correlation (training set), y = fan-out norm.",
    "success_rate": "Success rate (4.1b): fraction of seeds whose teacher node reaches best eval correlation > eval.threshold (0.95 in every preset); dotted after 5 epochs, solid at the end.",
    "convergence": "Convergence (4.1c): log10 eval MSE vs epoch, mean ± std over seeds.",
    "teacher_curves": "Per-teacher best eval correlation vs epoch (4.1d), one seed, coloured strong (0) to weak.",
    "sample_complexity": "Sample complexity (4.2): teacher-aware (solid) vs Gaussian (dashed) data, mean ± std over seeds.",
    "deep_lshape": "Deep L-shape (4.3): rows = hidden layers (top first), columns = evenly spaced epochs; y = sqrt(E_x beta_kk).",
    "deep_rho_vs_n": "Deep sample complexity (4.3): final rho_mean per layer and eval MSE vs training set size, MSE and CE training.",
    "layer_corr": "CIFAR-10 (4.4): per layer, mean over active teacher channels of the best student correlation vs epoch, mean ± std over seeds; one panel per multi.",
    "channel_corr": "CIFAR-10 (4.4): best correlation of every active teacher channel vs epoch (mean over seeds), coloured by fan-out norm; rows = multi, columns = layer.",
}
# One run's figures (figures.plot_run), in the order shown; any other figure in the folder follows, sorted.
RUN_CAPTIONS = {
    "lshape": "L-shape: fan-out norm vs best-teacher correlation of every student node at the last step.",
    "teacher_corr": "Best correlation of each teacher node vs step, coloured by fan-out norm; dead teacher nodes dotted.",
    "mse": "log10 MSE vs step, mean ± std over seeds, per split.",
    "theory": "Theory diagnostics: sqrt(E beta_kk) L-shape per layer, per-sample gradient norms, lowest-layer angles.",
    "converge": "After `studentspec converge`: each student's angle to its nearest teacher vs its fan-out norm.",
    "order": "eval.order: R heatmaps.",
}
REPORT = "report.html"
REPORT_FIGURES = "report_figures"  # a sweep report's figures of its chosen point, inside the sweep dir


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='num'>{_e(_fmt(v))}</td>" if i in numeric else f"<td>{_e(_fmt(v))}</td>"
                                    for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def claims_html(claims: list[dict[str, Any]]) -> str:
    """The claims table: verdict cells coloured, nothing dropped."""
    rows = []
    for c in claims:
        verdict = "PASS" if c["passed"] else "FAIL"
        rows.append(f"<tr><td class='{verdict.lower()}'>{verdict}</td><td>{_e(c['name'])}</td><td class='num'>{_e(_fmt(c['value']))}</td>"
                    f"<td>{_e(c['threshold'])}</td><td>{_e(c['statistic'])}</td><td>{_e(c['justification'])}</td><td class='small'>{_e(c.get('detail', ''))}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("verdict", "claim", "value", "threshold", "statistic", "why this threshold", "detail"))
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


def _figures(out: Path, names: list[str], folder: str = "figures", captions: dict[str, str] | None = None) -> str:
    """The PNGs out/folder/NAME.png embedded as base64 <figure>s; a missing one is named in red."""
    captions = CAPTIONS if captions is None else captions
    parts = []
    for name in names:
        png = out / folder / f"{name}.png"
        if not png.is_file():
            parts.append(f"<p class='fail'>figure {_e(name)} missing</p>")
            continue
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<figure id='fig-{_e(name)}'><img alt='{_e(name)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption><b>{_e(name)}</b>: {_e(captions.get(name, ''))} (PDF beside the PNG in {_e(folder)}/)</figcaption></figure>")
    return "\n".join(parts)


def render(out: Path) -> str:
    """The report page of one reproduce dir, as a string."""
    info, doc = read_json(out / "reproduce.json"), read_json(out / "claims.json")
    s = doc["summary"]
    calls = info.get("invocations", [])
    wall = [[c.get("started"), c.get("wall_time_s"), c.get("train_wall_time_s"),
             ", ".join(f"{k}: {v['run']} run, {v['skipped']} skipped, {len(v['failed'])} failed" for k, v in c.get("parts", {}).items())] for c in calls]
    job_time = 0.0
    sections = []
    for cfg in sorted((out / "configs").glob("*.yaml")):
        sections.append(f"<h3>{_e(cfg.stem)}</h3><pre>{_e(cfg.read_text())}</pre>")
    seed_tables = []
    for sweep_dir in sorted(p for p in (out / "sweep").iterdir() if (p / "sweep.json").is_file()) if (out / "sweep").is_dir() else []:
        header, rows = seed_rows(sweep_dir)
        for job in (sweep_dir / "jobs").glob("*/summary.json"):
            job_time += float(read_json(job).get("wall_time_s", 0.0))
        numeric = {i for i, h in enumerate(header) if h.endswith("mse") or h.startswith(("rho_mean", "n_specialized"))}
        seed_tables.append(f"<details><summary>{_e(sweep_dir.name)}: {len(rows)} rows</summary>{_table(header, rows, numeric)}</details>")
    versions = info.get("versions", {})
    title = f"studentspec — {info['experiment']} ({info['scale']} scale)"
    verdict = "pass" if s["failed"] == 0 else "fail"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class="{verdict}">{s['passed']} of {s['total']} claims pass, {s['failed']} fail.</p>
<p class="small">Generated {_e(time.strftime('%Y-%m-%d %H:%M:%S'))} from the stored results in {_e(out.resolve())}.
Regenerate with <code>studentspec report {_e(out)}</code> (no retraining).</p>
<h2>Claims</h2>
{claims_html(doc['claims'])}
<h2>Figures</h2>
{_figures(out, doc.get('figures', []))}
<h2>Wall time</h2>
{_table(['started', 'wall time (s)', 'sweeps (s)', 'jobs'], wall, {1, 2})}
<p class="small">Training time summed over jobs (each job's own clock): {job_time:.1f} s. Figures and claims last computed in {doc.get('wall_time_s', 0)} s.</p>
<h2>Per-seed summary</h2>
{''.join(seed_tables)}
<h2>Configuration</h2>
{''.join(sections)}
<h2>Versions</h2>
{_table(['package', 'version'], [[k, v] for k, v in versions.items()])}
</body></html>
"""


KINDS = {"reproduce": "reproduce dir", "cifar10": "cifar10 reproduce dir", "run": "run dir", "sweep": "sweep dir"}


def result_kind(out: Path) -> str:
    """What `out` holds (a key of KINDS); StoreError (one line) naming what it is not otherwise."""
    if not out.is_dir():
        raise StoreError(f"{out}: directory not found")
    if (out / "reproduce.json").is_file():
        return "cifar10" if read_json(out / "reproduce.json").get("experiment") == "cifar10" else "reproduce"
    if (out / "summary.json").is_file() and (out / "config.yaml").is_file():
        return "run"
    if (out / "sweep.json").is_file():
        return "sweep"
    raise StoreError(f"{out}: not a run, sweep or reproduce dir (no summary.json with config.yaml, no sweep.json, no reproduce.json)")


def _page(title: str, out: Path, body: str, regenerate: str = "") -> str:
    """A whole self-contained page: title, provenance line, body."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class="small">Generated {_e(time.strftime('%Y-%m-%d %H:%M:%S'))} from the stored results in {_e(out.resolve())}.
Regenerate with <code>studentspec report {_e(out)}{_e(regenerate)}</code> (no retraining).</p>
{body}
</body></html>
"""


def _figure_names(folder: Path) -> list[str]:
    """The PNG figures in `folder`: plot_run's in RUN_CAPTIONS order, then any other, sorted."""
    names = {p.stem for p in folder.glob("*.png") if p.is_file()} if folder.is_dir() else set()
    return [n for n in RUN_CAPTIONS if n in names] + sorted(names - set(RUN_CAPTIONS))


def _seed_table(summary: dict[str, Any], lead: list[Any] | None = None) -> tuple[list[str], list[list[Any]]]:
    """Per seed of a summary.json: its final numbers (time_to_specialize lists left out), diverged as a step or 'no'."""
    entries = summary.get("per_seed", {})
    keys = list(dict.fromkeys(k for e in entries.values() for k in e if not k.startswith("time_to_specialize")))
    rows = []
    for seed, entry in entries.items():
        values = [entry.get(k) for k in keys]
        rows.append([*(lead or []), seed, *("no" if k == "diverged_at_step" and v is None else v for k, v in zip(keys, values))])
    return ["seed", *("diverged at step" if k == "diverged_at_step" else k for k in keys)], rows


def _numeric(rows: list[list[Any]]) -> set[int]:
    """Columns whose cells are all numbers (right-aligned)."""
    return {i for i in range(len(rows[0]))
            if all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows)} if rows else set()


def _path_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """Which code trained and evaluated a run (summary.json's pipeline, kernel, eval_kernel) and its size."""
    keys = [("pipeline", "pipeline"), ("kernel", "kernel (training step: 'c' = compiled, 'torch')"),
            ("eval_kernel", "eval_kernel (evaluation)"), ("seeds", "seeds"), ("steps", "steps"), ("n_train", "n_train"), ("n_eval", "n_eval")]
    return [[label, summary[k] if k != "seeds" else ", ".join(map(str, summary[k]))] for k, label in keys if k in summary]


def _versions(summary: dict[str, Any]) -> str:
    return _table(["package", "version"], [[k, v] for k, v in summary.get("versions", {}).items()])


def render_run(out: Path, redraw: bool = False) -> str:
    """The report page of one run dir; its figures/ drawn first (figures.plot_run) when missing or with redraw."""
    from .figures import plot_run
    from ..store import load_run

    summary = read_json(out / "summary.json")
    fig_dir = out / "figures"
    check_figures(fig_dir)
    if redraw or not all((fig_dir / f"{n}.png").is_file() for n in ("lshape", "teacher_corr", "mse")):
        plot_run(load_run(out), fig_dir)
    header, rows = _seed_table(summary)
    wall = [["training (wall_time_s)", summary.get("wall_time_s")], ["of which evaluation (eval_time_s)", summary.get("eval_time_s")]]
    body = f"""<h2>Per-seed summary</h2>
<p class="small">Final numbers of summary.json (eval split unless named train_).</p>
<div class='wide'>{_table(header, rows, _numeric(rows))}</div>
<h2>Figures</h2>
{_figures(out, _figure_names(fig_dir), captions=RUN_CAPTIONS)}
<h2>Training path</h2>
{_table(['', 'value'], _path_rows(summary))}
<h2>Wall time</h2>
{_table(['', 'seconds'], [r for r in wall if r[1] is not None], {1})}
<h2>Configuration</h2>
<pre>{_e((out / 'config.yaml').read_text())}</pre>
<h2>Versions</h2>
{_versions(summary)}"""
    return _page(f"studentspec — run {out.resolve().name}", out, body)


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
    """One row per finished job and seed: final eval (and train) MSE and, per layer, the fraction of active teacher nodes
    specialized (eval split, best correlation above the run's eval.threshold)."""
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
    match = [j for j in manifest["jobs"] if set(wanted) <= set(j["point"]) and all(parse_yaml(j["point"][k]) == v for k, v in wanted.items())]
    if not match:
        raise ConfigError(f"--point: no job of {out} at {point}")
    done = [j for j in match if j in finished]
    if not done:
        raise StoreError(f"{out}: no finished job at --point {point} yet")
    return done[0]


def _point_figures(out: Path, job: dict[str, Any]) -> list[str]:
    """Draw the run figures of one job into out/REPORT_FIGURES (never into the job dir); older figures there are removed."""
    from .figures import plot_run
    from ..store import load_run, remove_stale

    folder = out / REPORT_FIGURES
    check_figures(folder)
    paths = plot_run(load_run(out / "jobs" / job["id"]), folder)
    remove_stale(folder, [p.name for p in paths])  # another point's figures (e.g. its converge or theory figure), if ours
    return [p.stem for p in paths if p.suffix == ".png"]


def render_sweep(out: Path, point: str | None = None) -> str:
    """The report page of a sweep dir: per swept key, final numbers per value (other keys marginalized); a point's figures."""
    import yaml

    from ..sweep.grid import load_sweep

    manifest = read_json(out / "sweep.json")
    job = _point_job(out, manifest, point)  # before any work: a bad --point draws nothing
    swept, fixed = swept_keys(manifest)
    finals = sweep_finals(load_sweep(out))
    raw = {j["id"]: j["point"] for j in manifest["jobs"]}
    measures = [c for c in ("eval_mse", "train_mse") if c in finals] + sorted((c for c in finals if c.startswith("specialized_")),
                                                                              key=lambda c: int(c.rsplit("_", 1)[1]))
    labels = {"eval_mse": "final eval MSE", "train_mse": "final train MSE"}
    labels |= {c: f"specialized, layer {c.rsplit('_', 1)[1]}" for c in measures if c.startswith("specialized_")}
    key_tables = []
    for key in swept or [None]:
        order = list(dict.fromkeys(j["point"][key] for j in manifest["jobs"])) if key else ["all"]
        value = finals["job"].map(lambda i, key=key: raw[i][key] if key else "all")
        rows = []
        for v in order:
            part = finals[value == v]
            rows.append([v, len(part), *(_mean_std(part[c]) if len(part) else "n/a" for c in measures)])
        key_tables.append(f"<h3 id='key-{_e(key or 'all')}'>{_e(key or 'all jobs (no swept key)')}</h3>"
                          + f"<div class='wide'>{_table([key or '', 'seeds finished', *(labels[c] for c in measures)], rows, {1})}</div>")
    summaries = {j["id"]: read_json(out / "jobs" / j["id"] / "summary.json") for j in manifest["jobs"]
                 if (out / "jobs" / j["id"] / "summary.json").is_file()}
    jobs = [[j["id"], *(j["point"].get(k, "") for k in swept), ", ".join(map(str, j["seeds"])),
             "finished" if j["id"] in summaries else "not finished", summaries.get(j["id"], {}).get("wall_time_s"),
             len(summaries.get(j["id"], {}).get("diverged") or {})] for j in manifest["jobs"]]
    names = _point_figures(out, job)
    here = ", ".join(f"{k}={job['point'][k]}" for k in swept) or "the only point"
    total = sum(float(s.get("wall_time_s", 0.0)) for s in summaries.values())
    fixed_text = ", ".join(f"{k}={v}" for k, v in fixed.items()) or "none"
    body = f"""<p>{len(manifest['jobs'])} jobs, {len(summaries)} finished ({len(finals)} seeds with final numbers). Swept keys: {_e(', '.join(swept) or 'none')}.
Fixed overrides: {_e(fixed_text)}.</p>
<h2>Per swept key</h2>
<p class="small">Per value of one key, over every finished seed of every point with that value (the other keys marginalized):
mean ± std (ddof 0) of the final numbers at each job's last evaluation, eval split unless named train;
specialized = fraction of the layer's active teacher nodes whose best eval correlation is above the run's eval.threshold.</p>
{''.join(key_tables)}
<h2>Figures of one point</h2>
<p>{_e(here)}: job {_e(job['id'])} (seeds {_e(', '.join(map(str, job['seeds'])))}); choose another with
<code>studentspec report {_e(out)} --point key=value,...</code>.</p>
{_figures(out, names, folder=REPORT_FIGURES, captions=RUN_CAPTIONS)}
<h2>Jobs</h2>
<div class='wide'>{_table(['job', *swept, 'seeds', 'status', 'wall time (s)', 'diverged seeds'], jobs, {len(swept) + 3, len(swept) + 4})}</div>
<p class="small">Training time summed over finished jobs (each job's own clock): {total:.1f} s.</p>
<h2>Training path</h2>
<p class="small">Of the job drawn above.</p>
{_table(['', 'value'], _path_rows(summaries[job['id']]))}
<h2>Configuration</h2>
<p>{_e(manifest.get('config') or 'no config file (defaults)')}, grid:</p>
<pre>{_e(yaml.safe_dump(manifest.get('grid', {}), sort_keys=False, default_flow_style=None))}</pre>
<pre>{_e(manifest.get('config_text', ''))}</pre>
<h2>Versions</h2>
{_versions(summaries[job['id']])}"""
    return _page(f"studentspec — sweep {out.resolve().name}", out, body)


def render_cifar(out: Path, redraw: bool = False) -> str:
    """The report page of a cifar10 reproduce dir: teachers, per-multi student accuracy and rho per layer, figures."""
    from .cifar import summarize
    from .conv_figures import channel_corr_figure, layer_corr_figure
    from .style import save
    from ..store import load_run

    info = read_json(out / "reproduce.json")
    dirs = sorted(d for d in (out / "runs").glob("multi_*") if d.is_dir()) if (out / "runs").is_dir() else []
    if not dirs:
        raise StoreError(f"{out}: cifar10 reproduce dir without runs/multi_*/ (re-run `studentspec reproduce cifar10` to finish it)")
    runs = {float(run.config.student.multi): run for run in map(load_run, dirs)}
    fig_dir = out / "figures"
    check_figures(fig_dir)
    for name, make in (("layer_corr", layer_corr_figure), ("channel_corr", channel_corr_figure)):
        if redraw or not (fig_dir / f"{name}.png").is_file():
            save(make(runs), fig_dir, name)
    per_multi = summarize(runs)["per_multi"]
    n_layers = max(len(r["rho_mean"]) for r in per_multi.values())
    students = [[m, len(runs[float(m)].config.seeds), ", ".join(map(str, runs[float(m)].summary.get("student_widths", []))),
                 f"{r['accuracy_mean']:.4g} ± {r['accuracy_std']:.3g}",
                 *(f"{a:.4g} ± {b:.3g}" for a, b in zip(r["rho_mean"], r["rho_std"]))] for m, r in per_multi.items()]
    t, pr = info.get("teacher", {}), info.get("pruned", {})
    teachers = [["teacher (trained on labels)", t.get("accuracy"), ", ".join(map(str, t.get("widths", []))), ""],
                ["pruned teacher (fine-tuned; the students' teacher)", pr.get("accuracy"), ", ".join(map(str, pr.get("active_widths", []))),
                 ", ".join(map(str, pr.get("ratios", [])))]]
    seeds, configs = [], []
    for multi, run in sorted(runs.items()):
        header, rows = _seed_table(run.summary, [f"{multi:g}"])
        seeds += rows
        configs.append(f"<details><summary>runs/{_e(run.path.name)}/config.yaml</summary><pre>{_e((run.path / 'config.yaml').read_text())}</pre></details>")
    stage = [[k, v] for k, v in info.get("stage_seconds", {}).items()]
    first = runs[min(runs)].summary
    body = f"""<h2>Teachers</h2>
{_table(['', 'test accuracy', 'active channels per layer', 'pruned fraction per layer'], teachers, {1})}
<h2>Students per multi</h2>
<p class="small">At each run's last evaluation: mean ± std (ddof 0) over seeds of the test accuracy and, per conv layer,
of rho = the mean over active teacher channels of the best student correlation.</p>
{_table(['multi', 'seeds', 'student channels per layer', 'accuracy', *(f'rho layer {l}' for l in range(1, n_layers + 1))], students, {1})}
<h2>Figures</h2>
{_figures(out, ['layer_corr', 'channel_corr'])}
<h2>Per-seed summary</h2>
<div class='wide'>{_table(['multi', *header], seeds, _numeric(seeds))}</div>
<h2>Training path</h2>
{_table(['', 'value'], _path_rows(first))}
<h2>Wall time</h2>
{_table(['stage', 'seconds (last invocation)'], stage, {1})}
<p class="small">Student training summed over runs (each run's own clock): {sum(float(r.summary.get('wall_time_s', 0.0)) for r in runs.values()):.1f} s.</p>
<h2>Configuration</h2>
<p>{_e(info.get('config', ''))}, overrides: <code>{_e(' '.join(info.get('overrides', [])) or 'none')}</code></p>
{''.join(configs)}
<h2>Versions</h2>
{_versions(first)}"""
    return _page(f"studentspec — cifar10 ({info.get('scale', '?')} scale)", out, body)


def write_report(out: str | Path, reanalyze: bool = False, point: str | None = None) -> Path:
    """Write OUT/report.html for a run, sweep or reproduce dir (reanalyze: redraw figures, recompute claims, from stored runs)."""
    out = Path(out)
    kind = result_kind(out)
    if point is not None and kind != "sweep":
        raise ConfigError(f"--point: only for a sweep dir; {out} is a {KINDS[kind]}")
    path = out / REPORT
    check_files(out, [REPORT])  # before any work: never over a page studentspec has no record of writing
    if kind == "reproduce":
        if reanalyze or not (out / "claims.json").is_file():
            from .reproduce import ANALYSES, analyze

            experiment = read_json(out / "reproduce.json").get("experiment")
            if experiment not in ANALYSES:
                raise StoreError(f"{out}: no claims.json and no analysis for experiment {experiment!r} (report knows {', '.join(ANALYSES)}, cifar10)")
            analyze(out)
        text = render(out)
    elif kind == "cifar10":
        text = render_cifar(out, reanalyze)
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
            lines.append(f"| {doc['experiment']} | {c['name']} | {_fmt(c['value'])} | {c['threshold']} | {'PASS' if c['passed'] else '**FAIL**'} |")
        calls = info.get("invocations", [])
        # only an uninterrupted invocation (every job trained, none resumed) measures the experiment's wall time
        full = [c for c in calls if c.get("parts") and all(p["skipped"] == 0 and p["run"] == p["jobs"] for p in c["parts"].values())]
        wall = f"{full[-1]['wall_time_s']:.0f} s" if full else "n/a (resumed)"
        times.append(f"| {doc['experiment']} | {doc['scale']} | {wall} | {doc['summary']['passed']}/{doc['summary']['total']} |")
    return "\n".join([*times, "", *lines])
