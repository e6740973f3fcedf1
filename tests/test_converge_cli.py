"""`studentspec converge` end to end on a small realizable problem (d=10, 4 teacher nodes, 8 students)."""

import json

import pandas as pd

from studentspec.cli import main


def test_converge_cli_reaches_critical_point_and_theorem_holds(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["run", "configs/two_layer_quick.yaml", "seeds=[1]", "input_dim=10", "output_dim=8", "teacher.widths=[4]", "teacher.decay=0",
            "student.multi=2", "data.n_train=600", "data.n_eval=200", "train.epochs=15", "train.lr=0.05", "eval.every=5", "--out", str(run), "--quiet"]
    assert main(args) == 0
    assert main(["converge", str(run), "--tol", "1e-9"]) == 0
    assert "conclusion_2 holds" in capsys.readouterr().out
    info = json.loads((run / "converge.json").read_text())
    seed = info["per_seed"]["1"]
    assert seed["grad_max"] < 1e-9 and info["reached"] and info["all_conclusions_hold"]
    teachers = pd.read_parquet(run / "converge_teachers.parquet")
    assert len(teachers) == 4 and (teachers.angle_deg < 1.0).all()
    students = pd.read_parquet(run / "converge_students.parquet")
    # every one of the 8 students ends aligned with a teacher node, each teacher covered: the unaligned-students check
    # (conclusion 3, fan-out ~ 0) that stood here ran over an empty frame; test_converge checks it on a constructed
    # critical point that has an unaligned node
    assert len(students) == 8 and students.aligned.all() and set(students.best_teacher) == {0, 1, 2, 3}
    assert (students.fanout_norm > 0.1).all()  # aligned students carry the teacher's fan-out between them
    # the Hessian at the end point (half_sse, 10*8+8+8*8+8 = 160 parameters: exact): stored, printed, drawn
    spectrum = pd.read_parquet(run / "converge_hessian.parquet")
    assert len(spectrum) == 160 and (spectrum.method == "exact").all() and spectrum.eigenvalue.is_monotonic_increasing
    h = seed["hessian"]
    assert h["n_params"] == 160 and h["min_eigenvalue"] == spectrum.eigenvalue.min() and h["n_negative"] == 0
    assert h["n_near_zero"] >= 8  # one rescaling direction per hidden node at a critical point
    assert main(["plot", str(run)]) == 0 and (run / "figures" / "converge.png").is_file()
    assert (run / "figures" / "hessian.png").is_file() and (run / "figures" / "hessian.pdf").is_file()
    # Lanczos above --hessian-exact-max (converge starts again from the stored student, to the same end point):
    # the 3 largest and 3 smallest, equal to the exact ones at the top end
    assert main(["converge", str(run), "--tol", "1e-9", "--hessian-exact-max", "100", "--hessian-k", "3"]) == 0
    assert "Hessian (lanczos, 160 parameters)" in capsys.readouterr().out
    lan = pd.read_parquet(run / "converge_hessian.parquet")
    assert lan["index"].tolist() == [0, 1, 2, 157, 158, 159] and (lan.method == "lanczos").all()
    assert abs(lan.eigenvalue.to_numpy()[3:] - spectrum.eigenvalue.to_numpy()[-3:]).max() < 1e-9 * spectrum.eigenvalue.max()
    assert main(["plot", str(run)]) == 0
    # a run dir holding converge's files (the Hessian's included) and figures is still ours to --overwrite
    assert main([*args, "--overwrite"]) == 0 and not (run / "converge_hessian.parquet").exists()
    for bad in (["--hessian-k", "0"], ["--hessian-tol-rel", "2"], ["--hessian-exact-max", "-1"]):
        capsys.readouterr()
        assert main(["converge", str(run), *bad]) == 2
        assert bad[0][2:].replace("-", "_") in capsys.readouterr().err and not (run / "converge.json").exists()


def test_converge_rejects_bad_input(tmp_path, capsys):
    assert main(["converge", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    run = tmp_path / "bn"
    assert main(["run", "configs/two_layer_quick.yaml", "seeds=[1]", "input_dim=4", "output_dim=3", "teacher.widths=[2]", "data.n_train=50",
                 "data.n_eval=20", "train.epochs=1", "train.steps_per_epoch=5", "teacher.batchnorm=after", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["converge", str(run)]) == 2
    assert "BatchNorm" in capsys.readouterr().err
    assert main(["converge", str(run), "--tol", "-1"]) == 2


def test_converge_skips_diverged_seeds_and_reports_a_non_finite_start(tmp_path, capsys):
    from studentspec import load_config, write_run
    from studentspec import train

    tiny = ["seeds=[1,2]", "input_dim=4", "output_dim=3", "teacher.widths=[2]", "data.n_train=40", "data.n_eval=20",
            "train.steps_per_epoch=5", "train.epochs=1"]
    result = train(load_config(None, tiny), progress=False)
    result.diverged[2] = 3  # as the trainer records a seed whose loss went non-finite
    write_run(result, tmp_path / "one")
    assert main(["converge", str(tmp_path / "one"), "--max-iter", "5"]) == 0
    info = json.loads((tmp_path / "one" / "converge.json").read_text())
    assert list(info["per_seed"]) == ["1"] and any("[2] diverged" in n for n in info["notes"])
    result.diverged[1] = 2
    write_run(result, tmp_path / "all")
    capsys.readouterr()
    assert main(["converge", str(tmp_path / "all")]) == 2
    assert "every seed" in capsys.readouterr().err
    # an lr so large that the trained weights overflow the float64 objective: reported per seed, no traceback
    assert main(["run", "configs/two_layer_quick.yaml", *tiny, "train.lr=1000.0", "--out", str(tmp_path / "huge"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["converge", str(tmp_path / "huge")]) == 0
    assert "not finite" in capsys.readouterr().out
