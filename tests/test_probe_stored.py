"""Stored files validated before use: every file studentspec reads back (checkpoints, summary.json, population.json,
claims.json, reproduce.json, sweep.json, Parquet tables, weights.npz) is checked against its schema when it is read.

Each probe copies a real stored result (a tiny run, its checkpoint, a tiny sweep, a population dir) or a hand-made
reproduce dir into a fresh working directory, breaks one field, and runs the real command: exit 2, one line naming
the file and the field, no traceback, and the working directory unchanged byte for byte.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from studentspec import load_config, load_run, pipelines
from probe import assert_refused, snapshot
from studentspec.cli import main
from studentspec.ensemble import loopstate
from studentspec.store import StoreError
from studentspec.store import checkpoint as ck
from studentspec.sweep.grid import load_sweep, query

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "two_layer_quick.yaml")
TINY = ["seeds=[1,2]", "input_dim=4", "output_dim=3", "teacher.widths=[2]", "student.multi=2", "data.n_train=40",
        "data.n_eval=20", "train.steps_per_epoch=5"]
RESUMABLE = [*TINY, "train.epochs=7", "train.checkpoint_every=1", "train.optimizer=adam", "train.lr=0.01"]
CKPT = ".run.checkpoint"


@dataclass
class Stored:
    """The real results the probes break: a run dir, a checkpoint (of `run` after epoch 1), a sweep dir, a population dir."""

    run: Path
    checkpoint: Path
    sweep: Path
    population: Path


Setup = Callable[[Path, Stored], None]


@dataclass
class Case:
    """One probe: how to break a stored file in the working dir, the command line, words the error must contain."""

    id: str
    argv: list[str]
    words: tuple[str, ...]
    setup: Setup = field(default=lambda ws, s: None)


class Crash(Exception):
    """The process dying right after its first checkpoint."""


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Stored:
    base = tmp_path_factory.mktemp("stored")
    assert main(["run", QUICK, *TINY, "train.epochs=2", "--out", str(base / "run"), "--quiet"]) == 0
    real = ck.write_checkpoint

    def write(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise Crash

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipelines, "write_checkpoint", write)
        with pytest.raises(Crash):
            pipelines.train(load_config(QUICK, RESUMABLE), progress=False, out=base / "ck" / "run")
    assert main(["sweep", QUICK, *TINY, "train.epochs=1", "--out", str(base / "sw"), "--quiet", "--workers", "1"]) == 0
    assert main(["population", QUICK, "teacher.bias=0", "seeds=[1,2]", "input_dim=4", "output_dim=3", "teacher.widths=[2]",
                 "--steps", "20", "--out", str(base / "pop")]) == 0
    return Stored(base / "run", ck.checkpoint_path(base / "ck" / "run"), base / "sw", base / "pop")


# ---------------------------------------------------------------- ways to break a stored file

def edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def checkpoint(meta: Callable[[dict[str, Any]], None] | None = None, state: Callable[[dict[str, Any]], None] | None = None,
               table: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> Setup:
    """The tiny run's checkpoint in the working dir, its checkpoint.json, state.pt or scalars.parquet changed."""
    def make(ws: Path, s: Stored) -> None:
        shutil.copytree(s.checkpoint, ws / CKPT)
        if meta:
            edit_json(ws / CKPT / "checkpoint.json", meta)
        if state:
            saved = torch.load(ws / CKPT / "state.pt", weights_only=True)
            state(saved)
            torch.save(saved, ws / CKPT / "state.pt")
        if table:
            file = ws / CKPT / "scalars.parquet"
            table(pd.read_parquet(file)).to_parquet(file, index=False)
    return make


def run_dir(summary: Callable[[dict[str, Any]], None] | None = None, name: str | None = None,
            table: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
            weights: Callable[[dict[str, np.ndarray]], None] | None = None) -> Setup:
    """The tiny run in the working dir as `run`, its summary.json, table `name` or weights.npz changed."""
    def make(ws: Path, s: Stored) -> None:
        shutil.copytree(s.run, ws / "run")
        if summary:
            edit_json(ws / "run" / "summary.json", summary)
        if table and name:
            file = ws / "run" / f"{name}.parquet"
            table(pd.read_parquet(file)).to_parquet(file, index=False)
        if weights:
            with np.load(ws / "run" / "weights.npz") as z:
                arrays = {k: z[k] for k in z.files}
            weights(arrays)
            with open(ws / "run" / "weights.npz", "wb") as f:
                np.savez(f, **arrays)
    return make


def sweep_dir(manifest: Callable[[dict[str, Any]], None] | None = None, job: Callable[[Path, Path], None] | None = None) -> Setup:
    """The tiny sweep in the working dir as `sw`, its sweep.json changed, or its job dir (ws, job dir) changed."""
    def make(ws: Path, s: Stored) -> None:
        shutil.copytree(s.sweep, ws / "sw", symlinks=True)
        if manifest:
            edit_json(ws / "sw" / "sweep.json", manifest)
        if job:
            first = json.loads((ws / "sw" / "sweep.json").read_text())["jobs"][0]["id"]
            job(ws, ws / "sw" / "jobs" / first)
    return make


def job_id(value: Callable[[Path], str]) -> Setup:
    """A sweep whose first job id is `value(ws)`, with the tiny run where that id leads (outside the sweep)."""
    def make(ws: Path, s: Stored) -> None:
        shutil.copytree(s.run, ws / "outside")
        sweep_dir(lambda m: m["jobs"][0].update(id=value(ws)))(ws, s)
    return make


def converged(change: Callable[[dict[str, Any]], None]) -> Setup:
    """The tiny run with what `converge` writes beside its tables (made up), its converge.json changed."""
    def make(ws: Path, s: Stored) -> None:
        run_dir()(ws, s)
        pd.DataFrame({"seed": [1, 2], "angle_deg": [0.01, 30.0], "fanout_norm": [1.0, 0.01]}).to_parquet(ws / "run" / "converge_students.parquet")
        doc = {"angle_tol_deg": 1.0, "all_conclusions_hold": True, "per_seed": {"1": {"grad_max": 1e-9}, "2": {"grad_max": 2e-9}}}
        change(doc)
        (ws / "run" / "converge.json").write_text(json.dumps(doc))
    return make


def population(change: Callable[[dict[str, Any]], None]) -> Setup:
    def make(ws: Path, s: Stored) -> None:
        shutil.copytree(s.population, ws / "pop")
        edit_json(ws / "pop" / "population.json", change)
    return make


CLAIM = {"name": "L-shape", "statistic": "a ratio", "value": 0.1, "threshold": "<= 0.25", "passed": True, "justification": "why",
         "detail": ""}
CLAIMS = {"experiment": "two-layer", "scale": "tiny", "claims": [CLAIM], "summary": {"passed": 1, "failed": 0, "total": 1},
          "figures": ["lshape"], "wall_time_s": 1.0}
REPRODUCE = {"experiment": "two-layer", "scale": "tiny", "invocations": [
    {"started": "2025-01-01 00:00:00", "wall_time_s": 3.0, "train_wall_time_s": 2.0, "parts": {"lshape": {"jobs": 1, "run": 1, "skipped": 0, "failed": {}}}}]}


def reproduce_dir(claims: Callable[[dict[str, Any]], None] | None = None, info: Callable[[dict[str, Any]], None] | None = None) -> Setup:
    """A reproduce dir (reproduce.json, claims.json) with one of its files changed."""
    def make(ws: Path, s: Stored) -> None:
        (ws / "rep").mkdir()
        for name, doc, change in (("claims.json", CLAIMS, claims), ("reproduce.json", REPRODUCE, info)):
            doc = json.loads(json.dumps(doc))
            if change:
                change(doc)
            (ws / "rep" / name).write_text(json.dumps(doc))
    return make


def set_key(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set a dotted key (list indexes as numbers) of a JSON document."""
    def change(doc: dict[str, Any]) -> None:
        *path, last = key.split(".")
        here: Any = doc
        for part in path:
            here = here[int(part)] if isinstance(here, list) else here[part]
        here[int(last) if isinstance(here, list) else last] = value
    return change


def drop_key(key: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        del doc[key]
    return change


def tensor(key: str, index: int, make: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        state[key][index] = make(state[key][index])
    return change


def column(name: str, make: Callable[[pd.Series], Any]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(**{name: make(df[name])})
    return change


RESUME = ["run", QUICK, *RESUMABLE, "--out", "run", "--quiet", "--resume"]

CASES = [
    # checkpoint.json
    Case("ckpt-epoch-past-the-last", RESUME, ("checkpoint.json", "field epoch", "99", "7-epoch"), checkpoint(meta=set_key("epoch", 99))),
    Case("ckpt-epoch-equals-epochs", RESUME, ("checkpoint.json", "field epoch", "7"), checkpoint(meta=set_key("epoch", 7))),
    Case("ckpt-epoch-a-string", RESUME, ("checkpoint.json", "field epoch", "'1'"), checkpoint(meta=set_key("epoch", "1"))),
    Case("ckpt-epoch-a-float", RESUME, ("checkpoint.json", "field epoch", "integer"), checkpoint(meta=set_key("epoch", 1.0))),
    Case("ckpt-epoch-negative", RESUME, ("checkpoint.json", "field epoch", "greater than or equal to 0"), checkpoint(meta=set_key("epoch", -1))),
    Case("ckpt-epoch-missing", RESUME, ("checkpoint.json", "field epoch", "missing"), checkpoint(meta=drop_key("epoch"))),
    Case("ckpt-tables-unknown-name", RESUME, ("checkpoint.json", "field tables.3", "not a run table"),
         checkpoint(meta=lambda m: m["tables"].append("../../etc/passwd"))),
    Case("ckpt-tables-without-scalars", RESUME, ("checkpoint.json", "field tables", "scalars"),
         checkpoint(meta=lambda m: m["tables"].remove("scalars"))),
    Case("ckpt-config-not-a-mapping", RESUME, ("checkpoint.json", "field config"), checkpoint(meta=set_key("config", [1, 2]))),
    # state.pt: checked against the freshly built loop before anything is restored
    Case("ckpt-tensor-wrong-shape", RESUME, ("state.pt", "field tensors.0", "shape [2, 4, 4]"),
         checkpoint(state=tensor("tensors", 0, lambda t: torch.zeros(2, 3, 4, dtype=t.dtype)))),
    Case("ckpt-tensor-wrong-dtype", RESUME, ("state.pt", "field tensors.1", "float64"),
         checkpoint(state=tensor("tensors", 1, lambda t: t.float()))),
    Case("ckpt-tensor-missing", RESUME, ("state.pt", "field tensors", "a list of 4"), checkpoint(state=lambda s: s["tensors"].pop())),
    Case("ckpt-adam-moment-wrong-shape", RESUME, ("state.pt", "field optimizer.exp_avg.2"),
         checkpoint(state=lambda s: s["optimizer"]["exp_avg"].__setitem__(2, torch.zeros(5, dtype=torch.float64)))),
    Case("ckpt-optimizer-of-another-kind", RESUME, ("state.pt", "field optimizer", "adam"),
         checkpoint(state=lambda s: s.__setitem__("optimizer", {"buf": [None] * 4}))),
    Case("ckpt-generator-garbage", RESUME, ("state.pt", "field generators.0", "not a valid generator state"),
         checkpoint(state=tensor("generators", 0, torch.zeros_like))),
    Case("ckpt-alive-wrong-shape", RESUME, ("state.pt", "field alive"), checkpoint(state=lambda s: s.__setitem__("alive", torch.ones(3, dtype=torch.bool)))),
    Case("ckpt-step-a-string", RESUME, ("state.pt", "field step"), checkpoint(state=lambda s: s.__setitem__("step", "5"))),
    Case("ckpt-step-not-the-epochs-end", RESUME, ("state.pt", "field step", "ends at step 5"), checkpoint(state=lambda s: s.__setitem__("step", 4))),
    Case("ckpt-diverged-unknown-seed", RESUME, ("state.pt", "field diverged.0.0", "not one of the run's seeds"),
         checkpoint(state=lambda s: s.__setitem__("diverged", [[9, 1]]))),
    Case("ckpt-state-key-missing", RESUME, ("state.pt", "field generators", "missing"), checkpoint(state=lambda s: s.pop("generators"))),
    Case("ckpt-table-text-seed", RESUME, ("scalars.parquet", "column 'seed'", "integer"), checkpoint(table=column("seed", lambda c: c.astype(str)))),
    Case("ckpt-table-unknown-seed", RESUME, ("scalars.parquet", "column 'seed'", "77"), checkpoint(table=column("seed", lambda c: c * 0 + 77))),
    # summary.json of a run dir
    Case("summary-missing-per-seed", ["plot", "run"], ("summary.json", "field per_seed", "missing"), run_dir(summary=drop_key("per_seed"))),
    Case("summary-steps-a-string", ["plot", "run"], ("summary.json", "field steps", "'15'"), run_dir(summary=set_key("steps", "15"))),
    Case("summary-seeds-not-a-list", ["plot", "run"], ("summary.json", "field seeds"), run_dir(summary=set_key("seeds", 1))),
    Case("summary-seeds-not-the-configs", ["report", "run"], ("summary.json", "field seeds", "config.yaml"), run_dir(summary=set_key("seeds", [2, 1]))),
    Case("summary-per-seed-value-a-string", ["report", "run"], ("summary.json", "field per_seed.1.eval_mse"),
         run_dir(summary=set_key("per_seed.1.eval_mse", "low"))),
    Case("summary-diverged-unknown-seed", ["converge", "run"], ("summary.json", "field diverged", "seed '5'"),
         run_dir(summary=set_key("diverged", {"5": 10}))),
    Case("summary-wall-time-a-list", ["report", "run"], ("summary.json", "field wall_time_s"), run_dir(summary=set_key("wall_time_s", [1]))),
    # Parquet tables and weights.npz of a run dir
    Case("table-text-seed", ["plot", "run"], ("scalars.parquet", "column 'seed'", "integer"),
         run_dir(name="scalars", table=column("seed", lambda c: c.astype(str)))),
    Case("table-float-step", ["plot", "run"], ("students.parquet", "column 'step'", "integer"),
         run_dir(name="students", table=column("step", lambda c: c + 0.5))),
    Case("table-specialized-as-numbers", ["plot", "run"], ("teachers.parquet", "column 'specialized'", "boolean"),
         run_dir(name="teachers", table=column("specialized", lambda c: c.astype(int)))),
    Case("table-missing-column", ["plot", "run"], ("teachers.parquet", "column 'best_corr'", "missing"),
         run_dir(name="teachers", table=lambda df: df.drop(columns="best_corr"))),
    Case("table-unknown-split", ["plot", "run"], ("scalars.parquet", "column 'split'", "test"),
         run_dir(name="scalars", table=column("split", lambda c: c.replace("eval", "test")))),
    Case("weights-leading-axis", ["converge", "run"], ("weights.npz", "student.W1", "2 seeds"),
         run_dir(weights=lambda a: a.__setitem__("student.W1", a["student.W1"][:1]))),
    Case("weights-no-student", ["converge", "run"], ("weights.npz", "no student arrays"),
         run_dir(weights=lambda a: [a.pop(k) for k in list(a) if k.startswith("student.")])),
    Case("weights-foreign-key", ["converge", "run"], ("weights.npz", "'notes'"), run_dir(weights=lambda a: a.__setitem__("notes", np.zeros(2)))),
    Case("converge-json-wrong-type", ["plot", "run"], ("converge.json", "field angle_tol_deg"), converged(set_key("angle_tol_deg", "1 degree"))),
    Case("converge-json-grad-a-list", ["plot", "run"], ("converge.json", "field per_seed.1.grad_max"), converged(set_key("per_seed.1.grad_max", [0]))),
    # population.json
    Case("population-missing-loss", ["plot", "pop"], ("population.json", "field loss", "missing"), population(drop_key("loss"))),
    Case("population-loss-rows", ["plot", "pop"], ("population.json", "field loss", "one per seed"), population(lambda d: d["loss"].pop())),
    Case("population-seed-a-string", ["plot", "pop"], ("population.json", "field seeds.0"), population(set_key("seeds.0", "1"))),
    Case("population-steps-a-dict", ["plot", "pop"], ("population.json", "field steps"), population(set_key("steps", {"a": 1}))),
    # claims.json and reproduce.json of a reproduce dir
    Case("claims-passed-a-string", ["report", "rep"], ("claims.json", "field claims.0.passed"), reproduce_dir(claims=set_key("claims.0.passed", "yes"))),
    Case("claims-summary-missing", ["report", "rep"], ("claims.json", "field summary", "missing"), reproduce_dir(claims=drop_key("summary"))),
    Case("claims-figure-a-path", ["report", "rep"], ("claims.json", "field figures", "plain name"),
         reproduce_dir(claims=set_key("figures", ["../../secret"]))),
    Case("claims-value-a-string", ["report", "rep"], ("claims.json", "field claims.0.value"), reproduce_dir(claims=set_key("claims.0.value", "0.1"))),
    Case("reproduce-scale-missing", ["report", "rep"], ("reproduce.json", "field scale", "missing"), reproduce_dir(info=drop_key("scale"))),
    Case("reproduce-wall-time-a-string", ["report", "rep"], ("reproduce.json", "field invocations.0.wall_time_s"),
         reproduce_dir(info=set_key("invocations.0.wall_time_s", "3 s"))),
    # sweep.json: job ids are plain names inside the sweep
    Case("query-job-id-absolute", ["query", "sw", "SELECT count(*) FROM scalars"], ("sweep.json", "field jobs.0.id", "plain name"),
         job_id(lambda ws: str(ws / "outside"))),
    Case("query-job-id-dotdot", ["query", "sw", "SELECT count(*) FROM scalars"], ("sweep.json", "field jobs.0.id"), job_id(lambda ws: "../../outside")),
    Case("query-job-id-with-slash", ["query", "sw", "SELECT 1"], ("sweep.json", "field jobs.0.id"), job_id(lambda ws: "a/b")),
    Case("report-job-id-absolute", ["report", "sw"], ("sweep.json", "field jobs.0.id"), job_id(lambda ws: str(ws / "outside"))),
    Case("report-job-id-dotdot", ["report", "sw"], ("sweep.json", "field jobs.0.id"), job_id(lambda ws: "..")),
    Case("query-job-dir-a-link", ["query", "sw", "SELECT 1"], ("a link",),
         sweep_dir(job=lambda ws, d: (shutil.move(d, ws / "moved"), d.symlink_to(ws / "moved")))),
    Case("query-jobs-not-a-list", ["query", "sw", "SELECT 1"], ("sweep.json", "field jobs"), sweep_dir(set_key("jobs", {"a": 1}))),
    Case("query-job-seeds-missing", ["query", "sw", "SELECT 1"], ("sweep.json", "field jobs.0.seeds", "missing"),
         sweep_dir(lambda m: m["jobs"][0].pop("seeds"))),
    Case("report-config-text-missing", ["report", "sw"], ("sweep.json", "field config_text", "missing"), sweep_dir(drop_key("config_text"))),
    Case("query-job-ids-repeated", ["query", "sw", "SELECT 1"], ("sweep.json", "field jobs", "twice"),
         sweep_dir(lambda m: m["jobs"].append(m["jobs"][0]))),
    Case("query-job-text-seed", ["query", "sw", "SELECT 1"], ("scalars.parquet", "column 'seed'"),
         sweep_dir(job=lambda ws, d: pd.read_parquet(d / "scalars.parquet").astype({"seed": str}).to_parquet(d / "scalars.parquet"))),
]


def test_the_corpus_is_large_and_distinct():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_probe_stored(case: Case, tmp_path, monkeypatch, capsys, stored):
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    case.setup(ws, stored)
    before = snapshot(ws)
    rc = main(case.argv)
    assert_refused(rc, capsys, case.words, ws, before)


def test_results_written_by_this_version_load(stored, tmp_path, monkeypatch):
    """A real run, sweep, population dir and checkpoint pass their own checks (the probes above break them one field at a time)."""
    run = load_run(stored.run)
    assert set(run.weights()) >= {"teacher.W1", "student.W1"} and run.summary["seeds"] == [1, 2]
    tables = load_sweep(stored.sweep)
    assert len(tables["scalars"]) and query(stored.sweep, "SELECT count(*) AS n FROM scalars")["n"][0] == len(tables["scalars"])
    assert main(["plot", str(stored.population), "--out", str(tmp_path / "figs")]) == 0
    converged(lambda doc: None)(tmp_path, stored)  # a converge.json as converge writes it
    assert main(["plot", str(tmp_path / "run")]) == 0 and (tmp_path / "run" / "figures" / "converge.png").is_file()
    shutil.rmtree(tmp_path / "run")
    reproduce_dir()(tmp_path, stored)
    assert main(["report", str(tmp_path / "rep")]) == 0  # the hand-made reproduce dir the claims probes break is valid
    shutil.copytree(stored.checkpoint, tmp_path / CKPT)
    monkeypatch.chdir(tmp_path)
    assert main(RESUME) == 0 and load_run(tmp_path / "run").summary["resumed_from_epoch"] == 1
    assert not (tmp_path / CKPT).exists()


def test_a_bad_state_restores_nothing(stored):
    """Restoring is all or nothing: a state whose last field is bad leaves every tensor and generator of the loop as built."""
    from studentspec.mlp import checkpoint as mlp_checkpoint
    from studentspec.mlp.train import Loop, TrainResult
    from studentspec.ensemble.optim import Optimizer

    cfg = load_config(QUICK, RESUMABLE)
    setup = pipelines.build(cfg)
    params = setup.student.parameters()
    loop = Loop(setup, TrainResult(setup), Optimizer(params, "adam"), torch.ones(2, dtype=torch.bool), 0.0)
    before = [t.clone() for t in mlp_checkpoint._tensors(loop)], [g.get_state() for g in mlp_checkpoint._generators(loop)]
    found = ck.read_checkpoint(stored.checkpoint.parent / "run", cfg)
    assert found is not None
    state = dict(found.state, extra={"eval_time": "soon"})  # the last field checked
    with pytest.raises(StoreError, match=r"state\.pt: field extra\.eval_time"):
        mlp_checkpoint.restore(loop, found.epoch, state, found.tables, file=found.file)
    assert all(torch.equal(a, b) for a, b in zip(before[0], mlp_checkpoint._tensors(loop)))
    assert all(torch.equal(a, g.get_state()) for a, g in zip(before[1], mlp_checkpoint._generators(loop)))
    assert loop.step == 0 and loop.epoch == 0
    with pytest.raises(loopstate.StateError, match="field step"):
        loopstate.check_form(dict(found.state, step=True))
