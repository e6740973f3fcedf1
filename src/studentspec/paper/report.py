"""`studentspec report DIR`: a self-contained report.html of a reproduce dir, and the README's claims table.

The page embeds its figures as base64 PNG and uses no external file, script, font or style, so
it can be mailed or archived alone. Everything comes from stored files (claims.json, figures,
configs, each job's summary.json); when claims.json is missing, or with reanalyze, the claims
and figures are first recomputed from the stored run dirs (`reproduce.analyze`), never retrained.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

from ..ensemble.atomic import atomic_write
from ..store import StoreError, read_json

CSS = """
body { font-family: Georgia, 'DejaVu Serif', serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .3em .5em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-family: monospace; }
.pass { background: #dff3df; color: #135e13; font-weight: bold; } .fail { background: #f9dcdc; color: #8a1010; font-weight: bold; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; } figcaption { font-size: .9em; color: #555; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .8em; } .small { font-size: .85em; color: #555; }
"""

CAPTIONS = {
    "lshape": "L-shape (4.1a): every student node at the end; x = best teacher correlation (training set), y = fan-out norm.",
    "success_rate": "Success rate (4.1b): fraction of seeds whose teacher node reaches best eval correlation > eval.threshold (0.95 in every preset); dotted after 5 epochs, solid at the end.",
    "convergence": "Convergence (4.1c): log10 eval MSE vs epoch, mean ± std over seeds.",
    "teacher_curves": "Per-teacher best eval correlation vs epoch (4.1d), one seed, coloured strong (0) to weak.",
    "sample_complexity": "Sample complexity (4.2): teacher-aware (solid) vs Gaussian (dashed) data, mean ± std over seeds.",
    "deep_lshape": "Deep L-shape (4.3): rows = hidden layers (top first), columns = evenly spaced epochs; y = sqrt(E_x beta_kk).",
    "deep_rho_vs_n": "Deep sample complexity (4.3): final rho_mean per layer and eval MSE vs training set size, MSE and CE training.",
}


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


def _figures(out: Path, names: list[str]) -> str:
    parts = []
    for name in names:
        png = out / "figures" / f"{name}.png"
        if not png.is_file():
            parts.append(f"<p class='fail'>figure {_e(name)} missing</p>")
            continue
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<figure id='fig-{_e(name)}'><img alt='{_e(name)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption><b>{_e(name)}</b>: {_e(CAPTIONS.get(name, ''))} (PDF beside the PNG in figures/)</figcaption></figure>")
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


def write_report(out: str | Path, reanalyze: bool = False) -> Path:
    """Write OUT/report.html (recomputing claims and figures from stored runs when missing or asked)."""
    out = Path(out)
    if not (out / "reproduce.json").is_file():
        raise StoreError(f"{out}: directory not found" if not out.is_dir() else f"{out}: not a reproduce dir (reproduce.json missing; run `studentspec reproduce` first)")
    if reanalyze or not (out / "claims.json").is_file():
        from .reproduce import ANALYSES, analyze

        experiment = read_json(out / "reproduce.json").get("experiment")
        if experiment not in ANALYSES:
            raise StoreError(f"{out}: no claims.json and no analysis for experiment {experiment!r} (report knows {', '.join(ANALYSES)})")
        analyze(out)
    path = out / "report.html"
    text = render(out)
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
