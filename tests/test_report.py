"""report.html of reproduce, run, sweep and cifar10 reproduce dirs: self-contained, complete, from stored runs only; renders in headless Chromium."""

import base64
import html
import importlib
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studentspec.sweep import executors
from studentspec.paper import report
from studentspec.paper import reproduce
from studentspec.store import StoreError

from test_reproduce import in_process


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    """A tiny sample-complexity reproduction (one sweep part, four jobs)."""
    out = tmp_path_factory.mktemp("report") / "sc"
    with pytest.MonkeyPatch.context() as mp:
        in_process(mp)
        assert reproduce.reproduce("sample-complexity", "tiny", out, progress=False) == 0
    return out


class Refs(HTMLParser):
    """Every tag name and every src/href attribute of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.refs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href", "data", "srcset", "poster")]


def test_report_is_self_contained(repro):
    text = (repro / "report.html").read_text()
    parser = Refs()
    parser.feed(text)
    assert parser.refs, "expected embedded figures"
    for tag, key, value in parser.refs:
        assert value.startswith("data:image/png;base64,") or (key == "href" and value.startswith("#")), (tag, key, value[:60])
    assert not {"script", "link", "iframe", "object", "embed"} & set(parser.tags)
    assert "url(" not in text and "@import" not in text


def test_report_holds_claims_figures_config_seeds_versions(repro):
    text = (repro / "report.html").read_text()
    doc = json.loads((repro / "claims.json").read_text())
    assert len(doc["claims"]) == 1  # sample-complexity: one claim, checked below
    for c in doc["claims"]:
        assert html.escape(c["name"]) in text and html.escape(c["justification"]) in text
    assert text.count("<figure") == len(doc["figures"]) == 1
    for heading in ("Claims", "Figures", "Wall time", "Per-seed summary", "Configuration", "Versions"):
        assert f"<h2>{heading}</h2>" in text
    assert "teacher_aware" in text and "eval_mse" in text and "torch" in text
    verdict = "PASS" if doc["claims"][0]["passed"] else "FAIL"  # the verdict claims.json holds, not either word
    assert f"<td class='{verdict.lower()}'>{verdict}</td>" in text
    assert f"<td class='{'fail' if verdict == 'PASS' else 'pass'}'>" not in text


def test_fail_is_shown(repro, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(repro, d)
    doc = json.loads((d / "claims.json").read_text())
    doc["claims"][0] |= {"passed": False, "value": 1.0}
    doc["summary"] = {"passed": 0, "failed": 1, "total": 1}
    (d / "claims.json").write_text(json.dumps(doc))
    text = report.write_report(d).read_text()
    assert "<td class='fail'>FAIL</td>" in text and "0 of 1 claims pass, 1 fail" in text
    assert "**FAIL**" in report.markdown_table([d])


def test_report_recomputes_from_stored_runs_without_training(repro, tmp_path, monkeypatch):
    d = tmp_path / "copy"
    shutil.copytree(repro, d)
    before = json.loads((d / "claims.json").read_text())["claims"]
    shutil.rmtree(d / "figures")
    (d / "claims.json").unlink()
    (d / "report.html").unlink()
    monkeypatch.setattr(importlib.import_module("studentspec.pipelines"), "train", lambda *a, **k: pytest.fail("report must not train"))
    monkeypatch.setattr(executors, "run_job", lambda *a, **k: pytest.fail("report must not run jobs"))
    path = report.write_report(d)
    assert path.is_file() and (d / "figures" / "sample_complexity.png").is_file()
    assert json.loads((d / "claims.json").read_text())["claims"] == before


def test_report_of_a_non_result_dir_is_refused(tmp_path):
    with pytest.raises(StoreError, match="not a run, sweep or reproduce dir"):
        report.write_report(tmp_path)
    (tmp_path / "reproduce.json").write_text(json.dumps({"scale": "quick", "per_multi": {}}))  # no experiment named
    with pytest.raises(StoreError, match="experiment"):
        report.write_report(tmp_path)
    (tmp_path / "reproduce.json").write_text(json.dumps({"experiment": "cifar10", "scale": "tiny", "per_multi": {}}))  # cifar.reproduce's record, no runs
    with pytest.raises(StoreError, match="cifar10 reproduce dir without runs/multi_"):
        report.write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def _browser():
    """A Selenium driver for headless Chromium, or the reason there is none."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no headless browser: install the Debian packages chromium and chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1300,900"):
        options.add_argument(arg)
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(driver), options=options)


def test_report_renders_in_headless_chromium(repro):
    browser = _browser()
    try:
        browser.get((repro / "report.html").resolve().as_uri())
        assert "sample-complexity" in browser.title
        images = browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert images and all(done and w > 100 and h > 100 for done, w, h in images)
        rows = browser.execute_script("return document.querySelectorAll('table')[0].rows.length")
        assert rows == 1 + len(json.loads((repro / "claims.json").read_text())["claims"])
        fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(not url.startswith(("http:", "https:")) for url in fetched)
        shot = Path(repro / "report_screenshot.png")
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        browser.quit()


def test_part_without_finished_jobs_is_named(repro, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(repro, d)
    shutil.rmtree(d / "sweep" / "sample" / "jobs")
    with pytest.raises(StoreError, match="sample: no finished job"):
        report.write_report(d, reanalyze=True)


# --- reports of a run dir, a sweep dir and a cifar10 reproduce dir -------------------------------------------------
# The runs below train the paper's objective (train.loss = half_sse: J = 1/2 sum over outputs, mean over the batch, the
# preset's); the reports only read what was stored, and every number is checked against the stored Parquet tables.

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "two_layer_quick.yaml"
TINY = ["input_dim=5", "output_dim=3", "data.n_eval=30", "train.epochs=3", "train.steps_per_epoch=10", "eval.every=1",
        "eval.threshold=0.8"]  # a low threshold, so some teacher nodes count as specialized after a few steps


class Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts, under the <h2>/<h3> heading before it; the <pre> texts."""

    def __init__(self):
        super().__init__()
        self.tables, self.pres, self.heading, self._text, self._in = [], [], "", None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append((self.heading, []))
        elif tag == "tr":
            self.tables[-1][1].append([])
        elif tag in ("td", "th", "h2", "h3", "pre"):
            self._text, self._in = "", tag

    def handle_data(self, data):
        if self._text is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag != self._in:
            return
        if tag in ("td", "th"):
            self.tables[-1][1][-1].append(self._text)
        elif tag == "pre":
            self.pres.append(self._text)
        else:
            self.heading = self._text
        self._text = self._in = None


def parse(path):
    parser = Tables()
    parser.feed(path.read_text())
    return parser


def table(parsed, heading):
    """The rows (header first) of the one table under `heading`."""
    found = [rows for h, rows in parsed.tables if h == heading]
    assert len(found) == 1, (heading, [h for h, _ in parsed.tables])
    return found[0]


def mean_std(cell):
    """A 'mean ± std' cell as two floats."""
    m, s = cell.split(" ± ")
    return float(m), float(s)


def final(df, split):
    """Rows of `split` at the last step (one job)."""
    df = df[df["split"] == split]
    return df[df["step"] == df["step"].max()]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny two-layer run of three seeds, through `studentspec run`."""
    from studentspec.cli import main

    out = tmp_path_factory.mktemp("runreport") / "r"
    assert main(["run", str(CONFIG), *TINY, "data.n_train=60", "seeds=[1,2,3]", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A tiny 2 x 2 sweep (student.multi x data.n_train), two seeds, one job per seed."""
    from studentspec.sweep.grid import SweepOptions, run_sweep

    out = tmp_path_factory.mktemp("sweepreport") / "s"
    with pytest.MonkeyPatch.context() as mp:
        in_process(mp)
        result = run_sweep(str(CONFIG), ["student.multi=1,2", "data.n_train=60,90", "seeds=[1,2]", *TINY], out,
                           SweepOptions(ensemble_size=1, progress=False))
    assert len(result["done"]) == 8 and not result["failed"]
    return out


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    """`studentspec reproduce cifar10 --scale tiny` on small files in the CIFAR-10 format (test_reproduce's end-to-end test)."""
    from image_files import write_cifar
    from studentspec.cli import main

    tmp = tmp_path_factory.mktemp("cifarreport")
    root = write_cifar(tmp / "data", per_batch=12, n_test=20)
    out = tmp / "c"
    assert main(["reproduce", "cifar10", f"data.root={root}", "--scale", "tiny", "--out", str(out), "--quiet"]) == 0
    return out


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_run_report_holds_the_stored_numbers_and_writes_only_its_page_and_figures(run_dir, capsys):
    from studentspec.cli import main
    from studentspec.store import check_out

    before = _snapshot(run_dir)
    assert not (run_dir / "figures").exists()
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run_dir / 'report.html'}"
    after = _snapshot(run_dir)
    new = set(after) - set(before)
    assert {p for p in new if p.parts[0] != "figures"} == {Path("report.html")}
    assert {p.name for p in new if p.parts[0] == "figures"} == {".studentspec"} | {f"{n}.{e}" for n in ("lshape", "teacher_corr", "mse") for e in ("png", "pdf")}
    assert all(after[p] == before[p] for p in before if p.name != ".studentspec")  # the run's own files untouched (its marker records the new ones)
    check_out(run_dir, overwrite=True)  # a run dir with a report is still a run dir --overwrite may replace

    page = parse(run_dir / "report.html")
    rows = table(page, "Per-seed summary")
    header = rows[0]
    assert header[:3] == ["seed", "train_mse", "eval_mse"] and "rho_mean_1" in header and "n_specialized_1" in header
    sc = pd.read_parquet(run_dir / "scalars.parquet")
    ev, tr = final(sc, "eval").set_index("seed"), final(sc, "train").set_index("seed")
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3]
    for r in rows[1:]:
        cell = dict(zip(header, r))
        seed = int(cell["seed"])
        assert float(cell["eval_mse"]) == pytest.approx(ev.loc[seed, "mse"], rel=1e-3)
        assert float(cell["train_mse"]) == pytest.approx(tr.loc[seed, "mse"], rel=1e-3)
        assert float(cell["rho_mean_1"]) == pytest.approx(ev.loc[seed, "rho_mean_1"], rel=1e-3)
        assert int(cell["n_specialized_1"]) == ev.loc[seed, "n_specialized_1"]
        assert cell["diverged at step"] == "no"
    summary = json.loads((run_dir / "summary.json").read_text())
    path = dict(r[:2] for r in table(page, "Training path")[1:])
    assert path["pipeline"] == summary["pipeline"] == "mlp"
    assert any(k.startswith("kernel") and v == summary["kernel"] for k, v in path.items())
    assert any(k.startswith("eval_kernel") and v == summary["eval_kernel"] for k, v in path.items())
    assert (run_dir / "config.yaml").read_text() in page.pres
    assert [r[0] for r in table(page, "Versions")[1:]] == list(summary["versions"])
    assert float(table(page, "Wall time")[1][1]) == pytest.approx(summary["wall_time_s"], rel=1e-3)
    text = (run_dir / "report.html").read_text()
    assert text.count("<figure") == 3 and "data:image/png;base64," in text

    # figures that exist are kept (not redrawn); --reanalyze redraws them
    times = {p: p.stat().st_mtime_ns for p in (run_dir / "figures").iterdir()}
    report.write_report(run_dir)
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "figures").iterdir()} == times
    report.write_report(run_dir, reanalyze=True)
    assert all(p.stat().st_mtime_ns != t for p, t in times.items() if p.name != ".studentspec")


def test_sweep_report_tables_per_swept_key(sweep_dir, capsys):
    from studentspec.cli import main

    before = _snapshot(sweep_dir)
    assert main(["report", str(sweep_dir)]) == 0
    after = _snapshot(sweep_dir)
    assert all(after[p] == before[p] for p in before if p != Path(".studentspec"))  # nothing of the sweep changed, nothing written into job dirs
    assert {p.parts[0] for p in set(after) - set(before)} == {"report.html", report.REPORT_FIGURES}
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    # per job and seed, the final numbers straight from the job's Parquet files
    rows = []
    for job in manifest["jobs"]:
        sc = pd.read_parquet(sweep_dir / "jobs" / job["id"] / "scalars.parquet")
        te = pd.read_parquet(sweep_dir / "jobs" / job["id"] / "teachers.parquet")
        ev, tr, tf = final(sc, "eval"), final(sc, "train"), final(te, "eval")
        for seed in job["seeds"]:
            rows.append({**job["point"], "eval": ev[ev.seed == seed]["mse"].item(), "train": tr[tr.seed == seed]["mse"].item(),
                         "spec": tf[tf.seed == seed]["specialized"].mean()})
    ref = pd.DataFrame(rows)
    assert 0 < ref["spec"].mean() < 1, "the test needs some but not all teachers specialized"
    page = parse(sweep_dir / "report.html")
    for key in ("student.multi", "data.n_train"):
        got = table(page, key)
        assert got[0] == [key, "seeds finished", "final eval MSE", "final train MSE", "specialized, layer 1"]
        assert [r[0] for r in got[1:]] == sorted(set(ref[key]))
        for r in got[1:]:
            part = ref[ref[key] == r[0]]
            assert int(r[1]) == len(part) == 4
            for cell, col in zip(r[2:], ("eval", "train", "spec")):
                m, s = mean_std(cell)
                assert m == pytest.approx(part[col].mean(), rel=1e-3, abs=1e-9)
                assert s == pytest.approx(np.std(part[col]), rel=6e-3, abs=1e-9)
    assert not [h for h, _ in page.tables if h in ("seeds", "input_dim")]  # single-valued overrides get no table
    jobs = table(page, "Jobs")
    assert [r[0] for r in jobs[1:]] == [j["id"] for j in manifest["jobs"]] and all(r[-3] == "finished" for r in jobs[1:])
    assert manifest["config_text"] in page.pres
    # default point: the first job, its figures drawn into the report's own folder
    first = manifest["jobs"][0]
    text = (sweep_dir / "report.html").read_text()
    assert f"job {first['id']}" in text and text.count("<figure") == 3


def test_sweep_report_counts_only_active_teachers(sweep_dir, tmp_path):
    """Pruned teacher nodes (active False, as conv teachers' masked channels) are left out of the specialized fraction."""
    d = tmp_path / "copy"
    shutil.copytree(sweep_dir, d, ignore=shutil.ignore_patterns("report*"))
    rows = []
    for job in json.loads((d / "sweep.json").read_text())["jobs"]:
        path = d / "jobs" / job["id"] / "teachers.parquet"
        te = pd.read_parquet(path)
        te["active"] = te["teacher"] != 0  # pretend teacher node 0 was pruned
        te["specialized"] |= te["teacher"] == 0  # and give it a value that would show if it were counted
        te.to_parquet(path, index=False)
        tf = final(te, "eval")
        rows += [{"m": job["point"]["student.multi"], "spec": tf[(tf.seed == seed) & tf.active]["specialized"].mean()} for seed in job["seeds"]]
    ref = pd.DataFrame(rows)
    got = table(parse(report.write_report(d)), "student.multi")
    for r in got[1:]:
        m, s = mean_std(r[4])
        assert m == pytest.approx(ref[ref.m == r[0]]["spec"].mean(), rel=1e-3, abs=1e-9)


def test_sweep_report_point_draws_that_points_figures(sweep_dir, tmp_path):
    from studentspec import load_run
    from studentspec.cli import main
    from studentspec.paper.figures import plot_run

    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    job = next(j for j in manifest["jobs"] if j["point"]["student.multi"] == "2" and j["point"]["data.n_train"] == "90")
    assert job["id"] != manifest["jobs"][0]["id"]
    from studentspec.store import claim_files

    figs = sweep_dir / report.REPORT_FIGURES
    claim_files(figs, ["converge.png"])  # another point's figure, recorded as studentspec's: stale, removed
    (figs / "converge.png").write_bytes(b"another point's figure")
    (figs / "sketch.png").write_bytes(b"the user's own figure")  # not recorded: left alone
    assert main(["report", str(sweep_dir), "--point", "student.multi=2,data.n_train=90"]) == 0
    assert sorted(p.name for p in figs.iterdir()) == sorted(
        [".studentspec", "sketch.png", *(f"{n}.{e}" for n in ("lshape", "teacher_corr", "mse") for e in ("png", "pdf"))])
    (figs / "sketch.png").unlink()
    text = (sweep_dir / "report.html").read_text()
    assert f"job {job['id']}" in text
    # the same figure drawn here from that job's run dir (PNG output of Agg is deterministic)
    plot_run(load_run(sweep_dir / "jobs" / job["id"]), tmp_path / "ref")
    other = tmp_path / "other"
    plot_run(load_run(sweep_dir / "jobs" / manifest["jobs"][0]["id"]), other)
    for name in ("lshape", "teacher_corr", "mse"):
        drawn = (sweep_dir / report.REPORT_FIGURES / f"{name}.png").read_bytes()
        assert drawn == (tmp_path / "ref" / f"{name}.png").read_bytes() != (other / f"{name}.png").read_bytes()
        assert base64.b64encode(drawn).decode() in text
    assert not any((sweep_dir / "jobs" / j["id"] / "figures").exists() for j in manifest["jobs"])


@pytest.mark.parametrize("argv,match", [(["--point", "bogus=1"], "--point: bogus is not a key"),
                                        (["--point", "student.multi=7"], "--point: no job"),
                                        (["--point", "student.multi"], "--point: items must look like key=value")])
def test_bad_point_is_exit_2_and_draws_nothing(sweep_dir, tmp_path, capsys, argv, match):
    from studentspec.cli import main

    d = tmp_path / "copy"
    shutil.copytree(sweep_dir, d, ignore=shutil.ignore_patterns("report*"))
    assert main(["report", str(d), *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not (d / "report.html").exists() and not (d / report.REPORT_FIGURES).exists()


def test_point_only_for_sweeps_and_foreign_files_refused(run_dir, sweep_dir, tmp_path, capsys):
    from studentspec.cli import main

    assert main(["report", str(run_dir), "--point", "student.multi=1"]) == 2
    assert "--point: only for a sweep dir" in capsys.readouterr().err
    d = tmp_path / "copy"
    shutil.copytree(sweep_dir, d)
    (d / report.REPORT_FIGURES / "notes.txt").write_text("mine")
    assert main(["report", str(d)]) == 0  # a user's file in studentspec's figure folder is left alone
    assert (d / report.REPORT_FIGURES / "notes.txt").read_text() == "mine"
    capsys.readouterr()
    fresh = tmp_path / "fresh"  # a sweep dir whose marker has no record of a report.html
    shutil.copytree(sweep_dir, fresh, ignore=shutil.ignore_patterns("report*"))
    mark = json.loads((fresh / ".studentspec").read_text())
    mark["files"] = [f for f in mark["files"] if not f.startswith("report")]
    (fresh / ".studentspec").write_text(json.dumps(mark))
    (fresh / "report.html").write_text("<html><title>studentspec: my own page</title></html>")
    assert main(["report", str(fresh)]) == 2
    assert "no record of writing it" in capsys.readouterr().err
    assert (fresh / "report.html").read_text() == "<html><title>studentspec: my own page</title></html>"


@pytest.mark.parametrize("kind", ["empty", "population", "file"])
def test_non_result_dir_is_exit_2(tmp_path, capsys, kind):
    from studentspec.cli import main

    d = tmp_path / "d"
    if kind == "file":
        d.write_text("x")
    else:
        d.mkdir()
        if kind == "population":
            (d / "population.json").write_text("{}")
    assert main(["report", str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("not a run, sweep or reproduce dir" in err or "directory not found" in err)
    assert not (d / "report.html").exists() if d.is_dir() else d.read_text() == "x"


def test_cifar10_report_teachers_students_figures(cifar_dir):
    path = report.write_report(cifar_dir)
    info = json.loads((cifar_dir / "reproduce.json").read_text())
    page = parse(path)
    teachers = table(page, "Teachers")
    assert float(teachers[1][1]) == pytest.approx(info["teacher"]["accuracy"], rel=1e-3)
    assert float(teachers[2][1]) == pytest.approx(info["pruned"]["accuracy"], rel=1e-3)
    assert teachers[2][2] == ", ".join(map(str, info["pruned"]["active_widths"]))
    students = table(page, "Students per multi")
    assert students[0][:4] == ["multi", "seeds", "student channels per layer", "accuracy"]
    assert students[0][4:] == [f"rho layer {l}" for l in range(1, 5)]
    assert [r[0] for r in students[1:]] == ["1", "2"]
    for r in students[1:]:
        sc = pd.read_parquet(cifar_dir / "runs" / f"multi_{r[0]}" / "scalars.parquet")
        last = sc[sc.step == sc.step.max()]
        assert int(r[1]) == len(last) == 2
        for cell, col in zip(r[3:], ["accuracy", *(f"rho_mean_{l}" for l in range(1, 5))]):
            m, s = mean_std(cell)
            assert m == pytest.approx(last[col].mean(), rel=1e-3, abs=1e-9) and s == pytest.approx(np.std(last[col]), rel=6e-3, abs=1e-9)
    text = path.read_text()
    assert text.count("<figure") == 2 and "fig-layer_corr" in text and "fig-channel_corr" in text
    seeds = table(page, "Per-seed summary")
    assert len(seeds) == 1 + 4 and seeds[0][:3] == ["multi", "seed", "eval_mse"]
    assert sorted(p.name for p in cifar_dir.iterdir()) == [".studentspec", "figures", "report.html", "reproduce.json", "runs", "teacher.pt", "teacher_pruned.pt"]


def test_new_reports_render_in_headless_chromium(run_dir, sweep_dir, cifar_dir):
    for d in (run_dir, sweep_dir, cifar_dir):
        if not (d / "report.html").is_file():
            report.write_report(d)
    browser = _browser()
    try:
        for d, title, n_figures in ((run_dir, "run r", 3), (sweep_dir, "sweep s", 3), (cifar_dir, "cifar10 (tiny scale)", 2)):
            browser.get((d / "report.html").resolve().as_uri())
            assert browser.title == f"studentspec — {title}"
            images = browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            assert len(images) == n_figures and all(done and w > 100 and h > 100 for done, w, h in images), (d, images)
            tables = browser.execute_script("return Array.from(document.querySelectorAll('table')).map(t => [t.rows.length, t.offsetWidth, t.offsetHeight])")
            assert tables and all(rows >= 2 and w > 0 and h > 0 for rows, w, h in tables), (d, tables)
            visible = browser.execute_script("return document.body.innerText")
            assert "Versions" in visible and "torch" in visible
            fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
            assert all(not url.startswith(("http:", "https:")) for url in fetched)
    finally:
        browser.quit()
