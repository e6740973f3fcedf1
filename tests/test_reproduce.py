"""`studentspec reproduce`: every experiment at tiny scale (seconds; cifar10 on small CIFAR-format files), resume, the paper-scale
grids, and the registry (a new experiment is one `Experiment` and one registration)."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from studentspec.sweep import executors
from studentspec.paper import claims as C
from studentspec.paper import reproduce
from studentspec.paper.experiments import EXPERIMENTS, Experiment, Part
from studentspec.paper.experiments.results import part_config
from studentspec.paper.style import save, styled, subplots
from studentspec.cli import main
from studentspec.store import StoreError
from studentspec.sweep.grid import SweepOptions, load_sweep, run_sweep

EXPECTED = {
    "two-layer": ({"lshape", "success_rate", "convergence", "teacher_curves"},
                  {"L-shape", "success falls with teacher index", "success rises with multi", "success falls with decay p", "success lower early than at the end",
                   "strong teacher nodes first", "larger multi converges faster", "larger multi converges lower", "Lemma identity"}),
    "sample-complexity": ({"sample_complexity"}, {"teacher-aware needs fewer samples"}),
    "deep": ({"deep_lshape", "deep_rho_vs_n"}, {"deep: lowest layer specializes most", "deep: lowest layer -> 1 as loss -> 0", "Lemma identity"}),
    "deep-table": ({"deep_table_vs_n", "deep_lshape"},
                   {"deep table: the fixed budget reproduces the reference", "deep: lowest layer specializes most (2 epochs)",
                    "deep: the upper layers jump together (2 epochs)", "deep: lowest layer specializes most (budget 1,200 samples)",
                    "deep: the upper layers jump together (budget 1,200 samples)", "Lemma identity"}),
    "online": ({"ode_vs_simulation", "plateau", "convergence_law"},
               {"ODE matches simulation", "plateau escape time grows with d", "plateau escape time grows like log d",
                "realizable students converge exponentially", "over-realized students converge as a power law"}),
}


def in_process(mp: pytest.MonkeyPatch) -> None:
    """Run sweep jobs in this process: the tiny jobs take less time than spawning a worker (the pool has its own tests)."""

    def local(tasks, workers):
        threads = torch.get_num_threads()
        try:
            for task in tasks:
                executors.run_job(task)
                yield task, None
        finally:
            torch.set_num_threads(threads)

    mp.setattr(executors, "local", local)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Each experiment reproduced once at tiny scale."""
    out = tmp_path_factory.mktemp("reproduce")
    codes = {}
    with pytest.MonkeyPatch.context() as mp:
        in_process(mp)
        for name in EXPECTED:
            codes[name] = reproduce.reproduce(name, "tiny", out / name, progress=False)
    return out, codes


@pytest.mark.parametrize("name", list(EXPECTED))
def test_tiny_experiment_writes_figures_claims_report(tiny, name):
    out, codes = tiny
    d = out / name
    assert codes[name] == 0
    figures, claim_names = EXPECTED[name]
    for fig in figures:
        for ext in ("png", "pdf"):
            assert (d / "figures" / f"{fig}.{ext}").stat().st_size > 1000
    doc = json.loads((d / "claims.json").read_text())
    assert {c["name"] for c in doc["claims"]} == claim_names
    assert set(doc["figures"]) == figures
    for c in doc["claims"]:
        assert set(c) >= {"name", "statistic", "value", "threshold", "passed", "justification"}
        assert isinstance(c["passed"], bool) and c["justification"]
    assert doc["summary"]["total"] == len(claim_names)
    assert (d / "report.html").is_file()
    info = json.loads((d / "reproduce.json").read_text())
    assert info["experiment"] == name and info["scale"] == "tiny" and info["invocations"][-1]["wall_time_s"] > 0


def test_lemma_holds_on_stored_weights(tiny):
    out, _ = tiny
    for name in ("two-layer", "deep", "deep-table"):
        lemma = next(c for c in json.loads((out / name / "claims.json").read_text())["claims"] if c["name"] == "Lemma identity")
        assert lemma["passed"] and lemma["value"] < 1e-12


def test_rerun_resumes_without_training(tiny, monkeypatch):
    out, _ = tiny
    d = out / "sample-complexity"
    before = json.loads((d / "claims.json").read_text())["claims"]
    monkeypatch.setattr(executors, "local", lambda tasks, workers: pytest.fail("a finished job was run again") if tasks else iter(()))
    assert reproduce.reproduce("sample-complexity", "tiny", d, progress=False) == 0
    info = json.loads((d / "reproduce.json").read_text())
    assert len(info["invocations"]) == 2 and info["invocations"][-1]["parts"]["sample"]["run"] == 0
    assert json.loads((d / "claims.json").read_text())["claims"] == before


def test_other_scale_in_same_dir_is_refused(tiny):
    out, _ = tiny
    with pytest.raises(StoreError, match="holds two-layer at scale tiny"):
        reproduce.reproduce("two-layer", "quick", out / "two-layer", progress=False)
    assert main(["reproduce", "deep", "--scale", "quick", "--out", str(out / "two-layer"), "--quiet"]) == 2


def test_unknown_scale_and_overrides_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "two-layer", "--scale", "huge"])
    assert main(["reproduce", "two-layer", "seeds=[1]", "--scale", "tiny", "--out", str(tmp_path / "x")]) == 2
    assert "takes no key=value overrides" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_reproduce_and_markdown(tmp_path, monkeypatch, capsys):
    in_process(monkeypatch)
    out = tmp_path / "sc"
    assert main(["reproduce", "sample-complexity", "--scale", "tiny", "--out", str(out), "--quiet"]) == 0
    assert (out / "report.html").is_file()
    capsys.readouterr()
    assert main(["report", str(out), "--markdown"]) == 0
    text = capsys.readouterr().out
    assert "| sample-complexity | teacher-aware needs fewer samples |" in text
    assert re.search(r"\| sample-complexity \| tiny \| \d+ s \| [01]/1 \|", text)  # the wall time of the uninterrupted run


@pytest.mark.parametrize("name, jobs, seeds, steps", [
    ("two-layer", {"lshape": 12, "success": 24}, 32, 100_000),
    ("sample-complexity", {"sample": 160}, 32, 100_000),
    ("deep", {"lshape": 2, "sample": 28}, None, None),
    ("deep-table", {"epochs": 7, "budget": 7}, None, None),
])
def test_paper_scale_is_science_md(tmp_path, name, jobs, seeds, steps):
    for part in reproduce.parts(name, "paper"):
        path = reproduce._part_file(tmp_path, part)
        options = SweepOptions(ensemble_size=part.ensemble_size, dry_run=True)
        assert len(run_sweep(str(path), [], tmp_path / part.name, options)["jobs"]) == jobs[part.name]
        cfg = part_config(tmp_path, part.name)
        if seeds:
            assert len(cfg.seeds) == seeds and cfg.train.epochs * cfg.train.steps_per_epoch == steps
    if name == "two-layer":
        success = yaml.safe_load((tmp_path / "configs" / "success.yaml").read_text())
        assert success["teacher"]["widths"] == [20] and success["sweep"]["grid"]["teacher.decay"] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
        assert success["input_dim"] == 100 and success["train"]["lr"] == 0.01 and success["train"]["batch_size"] == 16
    if name == "deep-table":  # 4.3's table: 200 epochs, and a budget of 2e7 back-propagated samples per run
        for part in ("epochs", "budget"):
            cfg = part_config(tmp_path, part)
            assert cfg.teacher.widths == [50, 75, 100, 125] and cfg.input_dim == 20 and cfg.output_dim == 100
            assert cfg.student.multi == 2.0 and cfg.train.loss == "mse" and cfg.train.batch_size == 64
            assert cfg.seeds == [11, 12]
            assert cfg.train.lr == {0: 0.2, 20: 0.1} and cfg.data.n_eval == 10240
        zipped = {p.name: p.zip for p in reproduce.parts(name, "paper")}
        sizes = [5000, 10000, 20000, 50000, 100000, 200000, 500000]
        assert zipped["epochs"]["data.n_train"] == zipped["budget"]["data.n_train"] == sizes
        assert part_config(tmp_path, "epochs").train.epochs == 200
        assert [n * e for n, e in zip(sizes, zipped["budget"]["train.epochs"])] == [20_000_000] * len(sizes)
        assert [n for n, t in zip(sizes, zipped["budget"]["theory.enabled"]) if t] == [200000]  # the L-shape run's N
    if name == "deep":
        sample = part_config(tmp_path, "sample")
        assert sample.teacher.widths == [50, 75, 100, 125] and sample.train.epochs == 200 and sample.data.std == 10.0


def test_paper_scale_settings_are_the_numbers_of_science_md():
    """Every setting of section 4.1-4.3 typed from the spec (not from reproduce.py's tables), per part at paper scale."""
    def resolved(name):
        return {p.name: (reproduce.build_config(p.config), p.grid, p.zip) for p in reproduce.parts(name, "paper")}

    two = resolved("two-layer")  # 4.1
    for part, m, decays in (("lshape", 10, [0.0, 1.0, 2.0]), ("success", 20, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])):
        cfg, grid, _ = two[part]
        assert cfg.seeds == list(range(1, 33)) and cfg.input_dim == 100 and cfg.output_dim == 50 and cfg.teacher.widths == [m]
        assert grid == {"teacher.decay": decays, "student.multi": [1.0, 2.0, 5.0, 10.0]}
        assert (cfg.teacher.activation, cfg.teacher.recipe, cfg.teacher.bias) == ("relu", "two_layer", -0.1)
        assert cfg.student.init_std == 0.005
        assert (cfg.data.kind, cfg.data.std, cfg.data.n_train, cfg.data.n_eval) == ("gaussian", 1.5, 10000, 10000)
        t = cfg.train
        assert (t.optimizer, t.lr, t.momentum, t.batch_size, t.sampling) == ("sgd", 0.01, 0.0, 16, "replacement")
        assert (t.steps_per_epoch, t.epochs, t.loss, t.dtype) == (1000, 100, "half_sse", "float64")
        assert cfg.eval.every == 1 and cfg.eval.threshold == 0.95
    cfg, grid, _ = resolved("sample-complexity")["sample"]  # 4.2
    assert cfg.input_dim == 100 and cfg.output_dim == 50 and cfg.teacher.widths == [5] and cfg.teacher.decay == 1.0
    assert cfg.seeds == list(range(1, 33)) and (cfg.train.batch_size, cfg.train.lr) == (16, 0.01)
    assert (cfg.train.epochs, cfg.train.steps_per_epoch) == (20, 5000)
    assert (cfg.data.std, cfg.data.boundary_shift_mean, cfg.data.boundary_shift_sigma, cfg.data.boundary_exact) == (1.5, 2.0, 2.0, False)
    assert grid == {"data.kind": ["teacher_aware", "gaussian"], "student.multi": [1.0, 2.0, 5.0, 10.0],
                    "data.n_train": [30, 45, 60, 75, 90, 105, 120, 135, 150, 165, 180, 195, 210, 270, 330, 390, 510, 630, 810, 1110]}
    deep = resolved("deep")  # 4.3
    for part, (cfg, grid, zipped) in deep.items():
        assert cfg.teacher.widths == [50, 75, 100, 125] and cfg.input_dim == 20 and cfg.output_dim == 100
        assert cfg.teacher.recipe == "deep" and cfg.teacher.tune and cfg.student.init_std is None  # PyTorch's Linear default
        assert (cfg.data.kind, cfg.data.std, cfg.data.n_eval) == ("gaussian", 10.0, 10240)
        assert cfg.train.lr == {0: 0.2, 20: 0.1} and (cfg.train.batch_size, cfg.train.sampling, cfg.train.optimizer) == (64, "shuffle", "sgd")
    cfg, _, _ = deep["lshape"]
    assert cfg.data.n_train == 200000 and cfg.train.epochs == 100 and cfg.train.loss == "mse"
    cfg, grid, zipped = deep["sample"]
    assert cfg.seeds == list(range(11, 21)) and cfg.train.epochs == 200
    assert grid == {"student.multi": [2.0, 5.0], "train.loss": ["mse", "ce"]}
    assert zipped == {"data.n_train": [5000, 10000, 20000, 50000, 100000, 200000, 500000]}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_quick_scale_is_valid_and_smaller(tmp_path, name):
    quick, paper = reproduce.parts(name, "quick"), reproduce.parts(name, "paper")
    assert [p.name for p in quick] == [p.name for p in paper]
    for q, p in zip(quick, paper):
        cq, cp = (reproduce.build_config(x.config) for x in (q, p))
        assert len(cq.seeds) <= len(cp.seeds) and cq.train.threads == 1
        assert set(q.grid) | set(q.zip) >= set(p.grid) | set(p.zip)  # same axes, fewer values


def test_cifar10_tiny_through_the_cli_end_to_end(tmp_path, capsys):
    """docs/model.md 4.4 at tiny scale: the real cifar.reproduce (no fake module) on small files in the CIFAR-10 format,
    through `studentspec reproduce cifar10 data.root=PATH --scale tiny --out DIR`."""
    import math

    from image_files import write_cifar
    from studentspec import load_run

    root = write_cifar(tmp_path / "data", per_batch=12, n_test=20)  # 60 training images, 20 test images
    out = tmp_path / "c"
    # without data: exit 2, one line saying where to get it, nothing written
    assert main(["reproduce", "cifar10", f"data.root={tmp_path / 'absent'}", "--scale", "tiny", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cifar-10-python.tar.gz" in err and "Traceback" not in err and not out.exists()

    assert main(["reproduce", "cifar10", f"data.root={root}", "--scale", "tiny", "--out", str(out), "--quiet"]) == 0
    for name in ("teacher.pt", "teacher_pruned.pt", "reproduce.json"):
        assert (out / name).is_file(), name
    for fig in ("layer_corr", "channel_corr"):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{fig}.{ext}").stat().st_size > 1000, (fig, ext)
    info = json.loads((out / "reproduce.json").read_text())
    assert info["experiment"] == "cifar10" and info["scale"] == "tiny" and info["overrides"] == [f"data.root={root}"]
    assert info["teacher"]["widths"] == [4, 4, 4, 4]
    # docs/model.md 4.4: mask the lowest [0.3, 0.5, 0.5, 0.7] of each layer's channels (64 -> 45, 32, 32, 20; 4 -> 3, 2, 2, 2)
    assert info["pruned"]["ratios"] == [0.3, 0.5, 0.5, 0.7] and info["pruned"]["active_widths"] == [3, 2, 2, 2]
    for key in ("teacher", "pruned"):
        assert 0.0 <= info[key]["accuracy"] <= 1.0
    assert sorted(info["per_multi"]) == ["1", "2"]
    for multi, row in info["per_multi"].items():
        assert 0.0 <= row["accuracy_mean"] <= 1.0 and 0.0 <= row["accuracy_std"] <= 0.5
        assert len(row["rho_mean"]) == len(row["rho_std"]) == 4  # one row per conv layer
        assert all(math.isfinite(r) and -1.0 <= r <= 1.0 for r in row["rho_mean"])
        assert all(math.isfinite(r) and 0.0 <= r <= 1.0 for r in row["rho_std"])
        run = load_run(out / "runs" / f"multi_{multi}")
        assert run.path == Path(row["run"]) and run.config.student.multi == float(multi) and run.config.seeds == [1, 2]
        sc = run.scalars[run.scalars.step == run.scalars.step.max()]
        assert len(sc) == 2 and sc.accuracy.between(0.0, 1.0).all()
        assert sc.accuracy.mean() == pytest.approx(row["accuracy_mean"])
        for l in range(1, 5):
            assert sc[f"rho_mean_{l}"].mean() == pytest.approx(row["rho_mean"][l - 1])
        last = run.teachers[run.teachers.step == run.teachers.step.max()]
        # per-layer rows: one per active (unpruned) teacher channel per seed, each a finite correlation in [-1, 1]
        assert last.groupby("layer").size().to_dict() == {1: 3 * 2, 2: 2 * 2, 3: 2 * 2, 4: 2 * 2}
        assert last.best_corr.between(-1.0, 1.0).all() and last.best_corr.notna().all()
        students = run.students[run.students.step == run.students.step.max()]  # the student has multi x the active widths
        m = int(float(multi))
        assert students.groupby("layer").size().to_dict() == {1: 3 * m * 2, 2: 2 * m * 2, 3: 2 * m * 2, 4: 2 * m * 2}
        assert students.best_corr.between(-1.0, 1.0).all() and students.best_corr.notna().all()
    # another scale in the same dir is refused (its checkpoints and runs are the tiny scale's), exit 2
    assert main(["reproduce", "cifar10", f"data.root={root}", "--scale", "quick", "--out", str(out), "--quiet"]) == 2
    assert "holds cifar10 at scale tiny" in capsys.readouterr().err


def test_images_tiny_through_the_cli_end_to_end(tmp_path, capsys):
    """docs/model.md 4.4's protocol on Fashion-MNIST-format idx files (synthetic, tests/image_files.py), through
    `studentspec reproduce images data.root=PATH --scale tiny --out DIR`: teachers, conv students, figures, claims,
    reproduce.json, report; a re-run reuses every stage."""
    from image_files import write_mnist
    from studentspec import load_run
    from studentspec.paper.experiments import images

    root = write_mnist(tmp_path / "data", n_train=60, n_test=30, gz=True)
    out = tmp_path / "i"
    args = ["reproduce", "images", f"data.root={root}", "--scale", "tiny", "--out", str(out), "--quiet"]
    assert main(args) == 0
    for name in ("teacher.pt", "teacher_pruned.pt", "reproduce.json", "claims.json", "runs/multi_1/summary.json",
                 "runs/multi_2/scalars.parquet"):
        assert (out / name).is_file(), name
    for fig in ("layer_corr", "channel_corr", "mlp_inputs"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    info = json.loads((out / "reproduce.json").read_text())
    assert (info["experiment"], info["scale"], info["dataset"]) == ("images", "tiny", "fashion_mnist")
    assert info["data"]["shape"] == [1, 28, 28] and info["pruned"]["active_widths"] == [3, 2, 2, 2]
    doc = json.loads((out / "claims.json").read_text())
    assert [c["name"] for c in doc["claims"]] == [
        "conv: more over-realization, higher correlation at every layer",
        "conv: more over-realization, better accuracy",
        "conv: lower layers specialize more",
        "mlp on real images: more over-realization, higher correlation at every layer",
        "mlp on Gaussian inputs like them: more over-realization, higher correlation at every layer",
    ]
    # part 2: the same MLP teacher draw on the flattened images and on Gaussian inputs of their mean and covariance
    for inputs, kind in (("real", "fashion_mnist"), ("gaussian", "gaussian_like")):
        for m in (1.0, 2.0):
            run = load_run(out / "runs" / "mlp" / f"{inputs}_multi_{m:g}")
            cfg = run.config
            assert (cfg.data.kind, cfg.input_dim, cfg.output_dim, cfg.student.multi) == (kind, 784, 10, m)
            assert cfg.teacher.recipe == "deep" and cfg.seeds == [1, 2] and cfg.data.n_train == 60
            last = run.scalars[(run.scalars.split == "eval") & (run.scalars.step == run.scalars.step.max())]
            assert len(last) == 2  # one row per seed, its mean and ddof-0 std are the stored summary
            stored = info["mlp"][inputs][f"{m:g}"]
            assert [last[f"rho_mean_{l}"].mean() for l in (1, 2, 3)] == pytest.approx(stored["rho_mean"])
            assert [last[f"rho_mean_{l}"].std(ddof=0) for l in (1, 2, 3)] == pytest.approx(stored["rho_std"])
    # the claims recomputed from the stored runs (their last evaluations) give the stored verdicts and values
    runs = {m: load_run(out / "runs" / f"multi_{m:g}") for m in (1.0, 2.0)}
    assert [c["value"] for c in images.conv_claims(runs)] == pytest.approx([c["value"] for c in doc["claims"][:3]])
    for m, run in runs.items():
        last = run.scalars[run.scalars.step == run.scalars.step.max()]
        assert last.accuracy.mean() == pytest.approx(info["per_multi"][f"{m:g}"]["accuracy_mean"])
        assert run.config.data.kind == "fashion_mnist" and not run.config.data.augment
    # a kept run is reused only under the config it was trained with (a changed preset or override remakes it)
    from studentspec.paper.experiments.cifar10 import load_matching

    kept = out / "runs" / "mlp" / "real_multi_2"
    assert load_matching(kept, load_run(kept).config).path == kept
    with pytest.raises(StoreError, match="trained with another config"):
        load_matching(kept, load_run(kept).config.model_copy(update={"seeds": [1]}))
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "teacher.pt", out / "runs/multi_2/scalars.parquet")}
    assert main(args) == 0  # resumed: nothing retrained
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    (out / "figures" / "mlp_inputs.png").unlink()  # the report draws a missing figure from the stored runs
    assert main(["report", str(out)]) == 0 and "conv: lower layers specialize more" in (out / "report.html").read_text()
    assert (out / "figures" / "mlp_inputs.png").stat().st_size > 1000
    capsys.readouterr()
    # another data set in the same dir is refused (its teacher and runs are fashion_mnist's), exit 2
    assert main(["reproduce", "images", f"data.root={root}", "--dataset", "mnist", "--scale", "tiny", "--out", str(out),
                 "--quiet"]) == 2
    assert "holds images at scale tiny on fashion_mnist" in capsys.readouterr().err
    # reproduce.json is checked against its schema when read: a corrupt part-2 record exits 2 naming the field
    bad = json.loads((out / "reproduce.json").read_text())
    bad["mlp"]["real"]["1"]["rho_mean"] = "high"
    (out / "reproduce.json").write_text(json.dumps(bad))
    assert main(["report", str(out)]) == 2
    assert "field mlp.real.1.rho_mean" in capsys.readouterr().err


def test_dataset_is_images_only_and_known(tmp_path, capsys, monkeypatch):
    """--dataset: refused for an experiment without data sets and for an unknown set, exit 2 with one line, nothing
    written (not even the default output dir)."""
    monkeypatch.chdir(tmp_path)
    for args, words in (
        (["reproduce", "cifar10", "--dataset", "mnist"], "--dataset: reproduce cifar10 takes none (only images)"),
        (["reproduce", "deep", "--dataset", "fashion_mnist"], "--dataset: reproduce deep takes none"),
        (["reproduce", "images", "--dataset", "svhn"], "takes one of fashion_mnist, mnist, cifar10, got 'svhn'"),
    ):
        assert main([*args, "--scale", "tiny", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    # no image files at data.root: one line naming the folder, before any work
    assert main(["reproduce", "images", f"data.root={tmp_path / 'absent'}", "--dataset", "mnist", "--scale", "tiny",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "absent" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    assert EXPERIMENTS["images"].default_out("quick") == "runs/reproduce/images-fashion_mnist-quick"
    assert EXPERIMENTS["images"].default_out("paper", "mnist") == "runs/reproduce/images-mnist-paper"
    assert EXPERIMENTS["cifar10"].default_out("quick") == "runs/reproduce/cifar10-quick"


def test_executor_options_reach_the_sweep(tmp_path, monkeypatch):
    from studentspec.sweep import grid as sweep

    seen, original = [], sweep.run_sweep

    def spy(config, items, out, options):
        seen.append({"executor": options.executor, "slurm": options.slurm})
        return original(config, items, out, dataclasses.replace(options, executor="local", slurm=None))

    in_process(monkeypatch)
    monkeypatch.setattr(sweep, "run_sweep", spy)
    out = tmp_path / "sc"
    assert main(["reproduce", "sample-complexity", "--scale", "tiny", "--out", str(out), "--quiet",
                 "--executor", "slurm", "--slurm", "timeout_min=5", "--slurm", "cluster=local"]) == 0
    assert seen == [{"executor": "slurm", "slurm": {"timeout_min": 5, "cluster": "local"}}]
    assert main(["reproduce", "sample-complexity", "--scale", "tiny", "--out", str(out), "--slurm", "oops"]) == 2


def test_resume_from_another_directory(tmp_path, monkeypatch):
    in_process(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert reproduce.reproduce("sample-complexity", "tiny", "rel", progress=False) == 0
    monkeypatch.chdir("/")
    monkeypatch.setattr(executors, "local", lambda tasks, workers: pytest.fail("a finished job was run again") if tasks else iter(()))
    assert reproduce.reproduce("sample-complexity", "tiny", tmp_path / "rel", progress=False) == 0


# ---------------------------------------------------------------- the registry: a new experiment is one Experiment and one entry

def toy_parts(scale: str) -> list[Part]:
    """The toy's one sweep: two multis of a two-node teacher, 20 steps each (every scale alike)."""
    config = {"seeds": [1, 2], "input_dim": 4, "output_dim": 2, "teacher": {"widths": [2]}, "data": {"n_train": 40, "n_eval": 40},
              "train": {"epochs": 2, "steps_per_epoch": 10, "threads": 1}, "eval": {"every": 1}}
    return [Part("only", config, {"student.multi": [1.0, 2.0]})]


def final_mse_is_finite(scalars) -> dict:
    """The toy's claim: no (job, seed) ends with a non-finite eval MSE."""
    last = C.final(scalars, "eval")
    value = float(np.isfinite(last["mse"]).mean())
    return C.claim("final MSE finite", "fraction of (job, seed) with a finite final eval MSE", value, ">= 1", passed=value >= 1,
                   justification="a toy: 20 SGD steps of a tiny student must not diverge")


@styled
def mse_by_multi(scalars):
    """The toy's figure: final eval MSE per multi."""
    fig, axes = subplots(1, 1)
    last = C.final(scalars, "eval")
    axes[0, 0].plot(last["student.multi"], last["mse"], "o")
    return fig


def toy_analyze(out: Path, scale: str, figs: Path):
    """The toy's figure and claim from its stored sweep."""
    t = load_sweep(out / "sweep" / "only")
    return save(mse_by_multi(t["scalars"]), figs, "mse_by_multi"), [final_mse_is_finite(t["scalars"])]


TOY = Experiment("toy", {"mse_by_multi": "Toy: the final eval MSE of every seed per multi."}, parts=toy_parts, analyze=toy_analyze)


def test_a_new_experiment_is_one_registration(tmp_path, monkeypatch, capsys):
    """An experiment defined here, registered once, runs end to end through the CLI and the orchestrator; its report reads it back."""
    in_process(monkeypatch)
    with pytest.raises(SystemExit):  # not registered yet: the CLI's choices come from the registry
        main(["reproduce", "toy", "--scale", "tiny", "--out", str(tmp_path / "no")])
    capsys.readouterr()
    monkeypatch.setitem(EXPERIMENTS, TOY.name, TOY)
    out = tmp_path / "toy"
    assert main(["reproduce", "toy", "--scale", "tiny", "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "claims.json").read_text())
    assert doc["experiment"] == "toy" and doc["figures"] == ["mse_by_multi"] and doc["summary"] == {"passed": 1, "failed": 0, "total": 1}
    assert [c["name"] for c in doc["claims"]] == ["final MSE finite"]
    assert len(json.loads((out / "sweep" / "only" / "sweep.json").read_text())["jobs"]) == 2
    for ext in ("png", "pdf"):
        assert (out / "figures" / f"mse_by_multi.{ext}").stat().st_size > 1000
    assert "Toy: the final eval MSE of every seed per multi." in (out / "report.html").read_text()
    (out / "claims.json").unlink()  # the report re-analyzes through the registry, never trains
    monkeypatch.setattr(executors, "run_job", lambda *a, **k: pytest.fail("report must not run jobs"))
    assert main(["report", str(out)]) == 0
    assert json.loads((out / "claims.json").read_text())["claims"] == doc["claims"]


def test_an_experiment_is_sweeps_or_its_own_run():
    with pytest.raises(TypeError, match="parts and analyze"):
        Experiment("neither", {})
    with pytest.raises(TypeError, match="parts and analyze"):
        Experiment("both", {}, parts=toy_parts, analyze=toy_analyze, run=lambda out, scale, overrides, *, progress: None)
    with pytest.raises(TypeError, match="parts and analyze"):
        Experiment("half", {}, parts=toy_parts)


def test_the_registry_lists_the_paper_and_loads_nothing_heavy():
    """The CLI reads the registry for its choices: importing it (and the CLI) loads no torch, pandas, matplotlib or scipy."""
    assert list(EXPERIMENTS)[:5] == ["two-layer", "sample-complexity", "deep", "cifar10", "images"]
    code = ("import sys, studentspec.cli, studentspec.paper.experiments\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pandas', 'matplotlib', 'scipy'})))\n")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == []
