"""report.html: self-contained, complete, recomputed from stored runs only; renders in headless Chromium."""

import html
import importlib
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

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


def test_report_of_a_non_reproduce_dir_is_refused(tmp_path):
    with pytest.raises(StoreError, match="not a reproduce dir"):
        report.write_report(tmp_path)
    (tmp_path / "reproduce.json").write_text(json.dumps({"scale": "quick", "per_multi": {}}))  # no experiment named
    with pytest.raises(StoreError, match="no analysis for experiment None"):
        report.write_report(tmp_path)
    (tmp_path / "reproduce.json").write_text(json.dumps({"experiment": "cifar10", "scale": "tiny", "per_multi": {}}))  # cifar.reproduce's record
    with pytest.raises(StoreError, match="no analysis for experiment 'cifar10'"):
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
