"""`studentspec ode` and `plot` of ODE dirs: refused configs (exit 2, one line, nothing written), the files and their
schemas, --overwrite, the figures and the overlay on a run, a corrupt ode.json refused, and the ODE's
time-to-specialize against a hand computation.

The objective of each test that depends on one is named in its docstring (half_sse unless said otherwise)."""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from studentspec.cli import main
from studentspec.config import build_config
from studentspec.store import StoreError, read_json, write_dir
from studentspec.store.owner import read_mark
from studentspec.theory import ode_record as R
from studentspec.theory.ode import cosines

BASE = {  # a small bias-free two-layer erf net on Gaussian online data: what the ODEs describe
    "seeds": [1, 2],
    "input_dim": 40,
    "output_dim": 2,
    "teacher": {"widths": [2], "activation": "erf", "recipe": "two_layer", "decay": 0.0, "no_bias": True},
    "student": {"multi": 1.5, "init_std": None},
    "data": {"kind": "online", "std": 1.0, "n_eval": 500},
    "train": {"lr": 0.01, "batch_size": 1, "steps_per_epoch": 40, "epochs": 5, "loss": "half_sse", "threads": 1},
    "eval": {"every": 1, "order": True, "grad_norm": False},
}


def write_config(tmp_path: Path, cfg: dict | None = None) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg or BASE))
    return path


# ---------------------------------------------------------------- no engine needed: constructed solutions


def test_specialization_times_by_hand():
    """Two seeds, K = 2 students, M = 2 teachers, 4 stored times; cosines set by hand through R with Q = T = I."""
    t = np.array([0.0, 0.5, 1.0, 2.0])
    Q = np.broadcast_to(np.eye(2), (4, 2, 2, 2)).copy()
    T = np.broadcast_to(np.eye(2) * 4.0, (2, 2, 2)).copy()  # |w*|^2 = 4: the cosine is R / 2
    R_ = np.zeros((4, 2, 2, 2))
    # seed 0: teacher 0 reached by student 1 at t = 1 (cosine 0.96 > 0.95), teacher 1 never (0.95 is not above)
    R_[2:, 0, 1, 0] = 2 * 0.96
    R_[:, 0, 0, 1] = 2 * 0.95
    # seed 1: teacher 1 reached at t = 0.5 by student 0, teacher 0 at t = 2 by student 0 (a student may reach both)
    R_[1:, 1, 0, 1] = 2 * 0.99
    R_[3, 1, 0, 0] = 2 * 0.951
    R_[1, 1, 1, 0] = -2 * 0.99  # anti-aligned: a cosine of -0.99 does not count
    got = R.specialization_times(t, R_, Q, T, 0.95)
    expected = np.array([[1.0, math.nan], [2.0, 0.5]])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)])


def test_cosine_matrix_is_the_cosine_of_weight_vectors():
    """R_km / sqrt(Q_kk T_mm) from s^2-scaled Gram matrices equals the plain cosine of the weight vectors (s cancels)."""
    g = np.random.default_rng(0)
    W, Wt, s2 = g.normal(size=(3, 50, 4)), g.normal(size=(3, 50, 2)), 2.25
    Q = s2 * np.einsum("sdk,sdl->skl", W, W)
    Rm = s2 * np.einsum("sdk,sdm->skm", W, Wt)
    T = s2 * np.einsum("sdm,sdn->smn", Wt, Wt)
    oracle = np.array(
        [[[W[s, :, k] @ Wt[s, :, m] / np.linalg.norm(W[s, :, k]) / np.linalg.norm(Wt[s, :, m]) for m in range(2)]
          for k in range(4)] for s in range(3)]
    )
    np.testing.assert_allclose(cosines(Rm, Q, T), oracle, rtol=1e-12)


def solution(S=2, K=3, M=2, C=2, n=5):
    """A constructed OdeSolution-like record with known numbers."""
    g = np.random.default_rng(1)
    t = np.linspace(0.0, 2.0, n)
    W = g.normal(size=(n, S, 10, K))
    Wt = g.normal(size=(S, 10, M))
    return SimpleNamespace(
        t=t,
        Q=np.einsum("nsdk,nsdl->nskl", W, W),
        R=np.einsum("nsdk,sdm->nskm", W, Wt),
        T=np.einsum("sdm,sdn->smn", Wt, Wt),
        V=g.normal(size=(n, S, K, C)),
        Vt=g.normal(size=(S, M, C)),
        J=np.abs(g.normal(size=(n, S))),
        mc_error=np.zeros((n, S)),
        seconds=0.1,
    )


def test_tables_hold_the_solution_and_scale_the_objective():
    """loss = J x j_scale: half_sse J itself, mse 2J/C; the mse column is 2J/C either way. Order rows are the products."""
    sol = solution()
    for loss, scale in (("half_sse", 1.0), ("mse", 2.0 / 2)):
        cfg = build_config({**BASE, "train": {**BASE["train"], "loss": loss}})
        df = R.loss_table(sol, [1, 2], cfg)
        row = df[(df["seed"] == 2) & (df["t"] == sol.t[3])].iloc[0]
        assert row["loss"] == pytest.approx(sol.J[3, 1] * scale) and row["mse"] == pytest.approx(2 * sol.J[3, 1] / 2)
        assert row["step"] == round(sol.t[3] * 40)
    o = R.order_table(sol, [1, 2], 40)
    assert set(o["kind"]) == set(R.ORDER_KINDS)
    pick = lambda kind, seed, t, i, j: o[(o["kind"] == kind) & (o["seed"] == seed) & (o["t"] == t) & (o["i"] == i) & (o["j"] == j)]["value"]  # noqa: E731
    assert pick("R", 2, sol.t[1], 2, 1).item() == pytest.approx(sol.R[1, 1, 2, 1])
    assert pick("VVt", 1, sol.t[4], 0, 1).item() == pytest.approx(sol.V[4, 0, 0] @ sol.Vt[0, 1])
    assert pick("VV", 1, sol.t[2], 1, 2).item() == pytest.approx(sol.V[2, 0, 1] @ sol.V[2, 0, 2])
    assert pick("Q", 1, sol.t[2], 2, 1).empty  # upper triangle only
    assert set(o[o["kind"].isin(["T", "VtVt"])]["t"]) == {0.0}  # the teacher's, once


@dataclass(frozen=True)
class Settings:
    activation: str = "erf"
    dt: float = 0.5
    method: str = "euler"


def fake_ode_dir(tmp_path: Path, name="ode", info_patch=None) -> Path:
    """An ODE dir written through the store from a constructed solution (what write_ode writes, without solving)."""
    cfg = build_config(BASE)
    sol = solution()
    info = R.summary(sol, cfg, Settings(), seconds=0.1, t_end=2.0)
    info |= info_patch or {}
    out = tmp_path / name

    def fill(stage):
        R.loss_table(sol, [1, 2], cfg).to_parquet(stage / "ode.parquet", index=False)
        R.order_table(sol, [1, 2], 40).to_parquet(stage / "ode_order.parquet", index=False)
        (stage / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
        (stage / "ode.json").write_text(json.dumps(info))

    write_dir(out, False, fill, R.KIND)
    return out


def test_ode_json_is_validated_when_read(tmp_path):
    out = fake_ode_dir(tmp_path)
    info, loss, order = R.load_ode(out)
    assert info["seeds"] == [1, 2] and len(loss) == 10 and set(order["kind"]) == set(R.ORDER_KINDS)
    doc = json.loads((out / "ode.json").read_text())
    for patch, field in (
        ({"seeds": []}, "seeds"),
        ({"t_end": "2"}, "t_end"),
        ({"final_J": {"7": 1.0}}, "final_J"),
        ({"specialization": {"threshold": 0.95, "time_to_specialize": {"9": [1.0]}}}, "specialization"),
    ):
        (out / "ode.json").write_text(json.dumps(doc | patch))
        with pytest.raises(StoreError, match=f"ode.json: field {field}"):
            read_json(out / "ode.json")
    (out / "ode.json").write_text("{not json")
    with pytest.raises(StoreError, match="ode.json"):
        R.load_ode(out)


def test_plot_refuses_a_corrupt_ode_dir_with_exit_2(tmp_path, capsys):
    out = fake_ode_dir(tmp_path)
    doc = json.loads((out / "ode.json").read_text())
    (out / "ode.json").write_text(json.dumps(doc | {"n_times": -1}))
    assert main(["plot", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ode.json: field n_times" in err
    assert not (out / "figures").exists()


def test_plot_draws_a_constructed_ode_dir(tmp_path):
    out = fake_ode_dir(tmp_path)
    assert main(["plot", str(out)]) == 0
    png = out / "figures" / "ode.png"
    assert png.stat().st_size > 5000 and read_mark(out / "figures").kind == "figures"
    assert "figures" in read_mark(out).files  # the figure folder is recorded in the ODE dir's marker


def test_compare_specialization_puts_the_run_beside_the_ode():
    info = {"specialization": {"time_to_specialize": {"1": [1.5, None], "2": [0.5, 3.0]}}}
    run = pd.DataFrame({"seed": [1, 1, 2, 2], "layer": 1, "teacher": [0, 1, 0, 1],
                        "time_to_specialize": [80.0, math.nan, 20.0, 200.0]})
    got = R.compare_specialization(info, run, 40).set_index(["seed", "teacher"])
    assert got.loc[(1, 0), "ode_t"] == 1.5 and got.loc[(1, 0), "run_t"] == 2.0
    assert math.isnan(got.loc[(1, 1), "ode_t"]) and math.isnan(got.loc[(1, 1), "run_t"])
    assert got.loc[(2, 1), "run_t"] == 5.0


# ---------------------------------------------------------------- the command (the engine of theory/ode)


@pytest.mark.parametrize(
    "override, key",
    [
        ("teacher.no_bias=false", "no_bias"),
        ("teacher.widths=[2,2]", "widths"),
        ("data.kind=uniform", "data.kind"),
        ("train.optimizer=adam", "optimizer"),
        ("train.momentum=0.5", "momentum"),
        ("train.loss=ce", "loss"),
    ],
)
def test_refused_configs_exit_2_naming_the_key_and_write_nothing(tmp_path, capsys, override, key):
    out = tmp_path / "ode"
    assert main(["ode", str(write_config(tmp_path)), override, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err, err
    assert not out.exists() and not any(p.name.startswith(".ode") for p in tmp_path.iterdir())


def test_bad_options_exit_2_before_any_work(tmp_path, capsys):
    cfg = str(write_config(tmp_path))
    for extra, word in ((["--time", "-1"], "--time"), (["--dt", "0"], "--dt"), (["--mc-samples", "1"], "--mc-samples")):
        assert main(["ode", cfg, "--out", str(tmp_path / "o"), "--quiet", *extra]) == 2
        assert word in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def ode_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ode")
    out = tmp / "ode"
    assert main(["ode", str(write_config(tmp)), "--out", str(out), "--quiet", "--dt", "0.02"]) == 0
    return out


def test_files_their_schemas_and_the_default_horizon(ode_dir):
    """half_sse: loss = J; the default horizon is the config's total steps / d = 40 x 5 / 40 = 5."""
    assert read_mark(ode_dir).kind == "ode"
    assert {p.name for p in ode_dir.iterdir()} >= {"ode.json", "ode.parquet", "ode_order.parquet", "config.yaml"}
    info, loss, order = R.load_ode(ode_dir)
    assert info["t_end"] == pytest.approx(5.0) and loss["t"].max() == pytest.approx(5.0, abs=1e-9)
    assert info["seeds"] == [1, 2] and info["settings"]["dt"] == 0.02
    assert (loss["step"] == np.rint(loss["t"] * 40)).all()
    np.testing.assert_allclose(loss["loss"], loss["mse"] * 2 / 2)  # half_sse J = (C/2) mse with C = 2
    assert set(order["kind"]) == set(R.ORDER_KINDS)
    tts = info["specialization"]["time_to_specialize"]
    cos = R.ode_cosines(order)  # the stored cosines give the stored times
    for seed, per_teacher in tts.items():
        for m, t in enumerate(per_teacher):
            best = cos[(cos["seed"] == int(seed)) & (cos["j"] == m)].groupby("t")["cosine"].max()
            above = best[best > info["specialization"]["threshold"]]
            assert (t is None and above.empty) or t == pytest.approx(above.index.min())
    assert yaml.safe_load((ode_dir / "config.yaml").read_text())["input_dim"] == 40


def test_existing_dir_needs_overwrite_and_only_ours_is_replaced(ode_dir, tmp_path, capsys):
    """An existing dir is refused without --overwrite (unchanged), a folder of other files even with it; an ODE dir
    studentspec wrote is replaced whole."""
    cfg = str(write_config(tmp_path))
    before = (ode_dir / "ode.json").stat().st_mtime_ns
    assert main(["ode", cfg, "--out", str(ode_dir), "--quiet", "--time", "0.5"]) == 2
    assert "already exists" in capsys.readouterr().err and (ode_dir / "ode.json").stat().st_mtime_ns == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert main(["ode", cfg, "--out", str(foreign), "--quiet", "--time", "0.5", "--overwrite"]) == 2
    assert "refuses to replace" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "keep"
    copy = tmp_path / "again"
    assert main(["ode", cfg, "--out", str(copy), "--quiet", "--time", "0.5"]) == 0
    assert main(["ode", cfg, "--out", str(copy), "--quiet", "--time", "1.0", "--overwrite"]) == 0
    assert read_json(copy / "ode.json")["t_end"] == 1.0


def test_plot_and_overlay_on_a_run(ode_dir, tmp_path, capsys):
    """half_sse: the run's eval loss at step 0 and the ODE's J(0) are the same objective of the same nets."""
    assert main(["plot", str(ode_dir), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "ode.png").stat().st_size > 5000
    run = tmp_path / "run"
    assert main(["run", str(write_config(tmp_path)), "data.n_eval=20000", "--out", str(run), "--quiet"]) == 0
    # the same seeds' nets: the run's loss at step 0 (half_sse on 20000 eval inputs) is the ODE's J(0) within 5 %
    # (the eval estimate's relative standard error is about 1 %)
    from studentspec.store import load_run

    sc = load_run(run).scalars
    j0_run = sc[(sc["step"] == 0) & (sc["split"] == "eval")].set_index("seed")["loss"]
    _, loss, _ = R.load_ode(ode_dir)
    j0_ode = loss[loss["t"] == 0].set_index("seed")["loss"]
    np.testing.assert_allclose(j0_run.sort_index(), j0_ode.sort_index(), rtol=0.05)
    assert main(["plot", str(run), "--ode", str(ode_dir), "--out", str(tmp_path / "over")]) == 0
    assert (tmp_path / "over" / "ode_overlay.png").stat().st_size > 5000
    plain = tmp_path / "plain"
    assert main(["run", str(write_config(tmp_path)), "eval.order=false", "--out", str(plain), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["plot", str(plain), "--ode", str(ode_dir), "--out", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "eval.order" in err and not (tmp_path / "no").exists()
