"""`tokensim report`: one self-contained report.html, opened in a real headless browser (Debian's chromium
through Playwright, no browser download): no console errors, every image loaded, the tables and numbers those
of the run's files."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

import tokensim
from sim.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _open(path):
    """(console errors, images' natural widths, a function to evaluate JS) of ``path`` in headless Chromium."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    playwright = sync_api.sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
    page = browser.new_page()
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    widths = page.evaluate("[...document.images].map(i => i.complete ? i.naturalWidth : 0)")
    result = (errors, widths, page.evaluate)

    def close():
        browser.close()
        playwright.stop()

    return result, close


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tests.conftest import TINY

    out = tmp_path_factory.mktemp("report") / "run"
    tokensim.run(tokensim.make_scenario(TINY), out=out)
    return out


def test_run_report_opens_offline_with_every_image_and_the_run_tables(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    report = run_dir / "report.html"
    assert capsys.readouterr().out.strip() == str(report)
    text = report.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # nothing fetched
    (errors, widths, evaluate), close = _open(report)
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        with open(run_dir / "per_user.csv", newline="") as f:
            users = list(csv.DictReader(f))
        assert errors == []
        assert len(widths) >= 5 and all(w > 0 for w in widths)  # the figures, inlined, all decoded
        assert evaluate("document.querySelectorAll('#per-user tbody tr').length") == len(users)
        assert evaluate("document.querySelectorAll('#groups tbody tr').length") == len(metrics["groups"])
        assert evaluate("document.getElementById('scenario').textContent") == metrics["scenario"]
        assert float(evaluate("document.getElementById('accuracy').textContent")) == round(metrics["accuracy"], 3)
    finally:
        close()


def test_sweep_report_shows_every_point(tiny, tmp_path):
    sweep = tokensim.sweep(tokensim.make_scenario(tiny), grid={"snr_db": [0, 10]}, out=tmp_path / "sweep")
    report = tokensim_report(sweep.directory)
    (errors, widths, evaluate), close = _open(report)
    try:
        assert errors == [] and len(widths) >= 5 and all(w > 0 for w in widths)
        points = [r for r in sweep.rows if r["user"] == "all"]
        assert evaluate("document.querySelectorAll('#results tbody tr').length") == len(points) == 2
        assert evaluate("document.getElementById('scenario').textContent") == "tiny"
    finally:
        close()


def tokensim_report(directory):
    from sim.report import write_report

    return write_report(directory)


def test_report_names_what_it_cannot_read(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a sweep directory" in capsys.readouterr().err
