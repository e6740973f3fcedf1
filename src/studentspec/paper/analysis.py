"""The analysis of a reproduce dir: its experiment's figures and claims.json, from the stored run dirs only.

`analyze` never trains, so figures, claims and report can be recomputed from old results; the
orchestrator (`paper.reproduce`) calls it after the sweeps, `paper.report` when claims are missing
or asked to be recomputed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..store import StoreError, read_json, write_json
from . import claims as C
from .experiments import get
from .experiments.results import first_job
from .style import paper_style


def analyze(out: str | Path, progress: bool = False) -> dict[str, Any]:
    """Figures and claims.json of a reproduce dir, from its stored run dirs only; returns the claims document."""
    out = Path(out)
    info = read_json(out / "reproduce.json")
    experiment = get(info["experiment"])
    if experiment.analyze is None:
        raise StoreError(f"{out}: experiment {experiment.name} has no sweeps to analyze")
    for sweep_dir in sorted((out / "sweep").glob("*/")):
        first_job(sweep_dir)  # a part whose every job failed has nothing to analyze: say which
    start = time.perf_counter()
    with paper_style():
        paths, found = experiment.analyze(out, info["scale"], out / "figures")
    doc = {
        "experiment": info["experiment"],
        "scale": info["scale"],
        "claims": found,
        "summary": C.summarize(found),
        "figures": list(dict.fromkeys(p.stem for p in paths)),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }  # figures in the paper's order
    write_json(out / "claims.json", doc)
    if progress:
        for c in found:
            value = "n/a" if c["value"] is None else f"{c['value']:.4g}"
            print(f"  {'PASS' if c['passed'] else 'FAIL'}  {c['name']}: {value} ({c['threshold']})")
    return doc
