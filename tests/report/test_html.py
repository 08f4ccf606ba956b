"""report.html: self-contained, every chart drawn, and looked at in headless Chromium."""

from __future__ import annotations

import json

from compress.report.compare import load_report
from compress.report.html import to_html
from tests.helpers.cli import invoke

BLUE = "rgb(9, 105, 218)"  # the first series' colour in the page's stylesheet


def _report(out):
    return json.loads((out / "report.json").read_text())


def test_the_page_needs_nothing_from_outside_and_escapes_names(two_runs):
    report = load_report(two_runs[0] / "report.json")
    report.final.name = "<script>alert(1)</script>"
    page = to_html(report)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "default-src 'none'" in page  # the browser refuses any load, should one creep in
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page


def test_a_run_writes_report_html_that_chromium_shows_without_errors(two_runs, chromium, tmp_path):
    report = _report(two_runs[0])
    page = chromium.load(two_runs[0] / "report.html")
    (tmp_path / "report.png").write_bytes(page.screenshot)  # kept for a person to look at
    assert page.errors == []
    charts = {chart["name"]: chart for chart in page.charts}
    expected = {"size", "macs", "latency-8", "metric", "gate-min_size_ratio", "gate-max_size_mb"}
    assert set(charts) == expected | {"sensitivity-1"}  # the int8 stage's worst nodes
    for chart in charts.values():
        assert chart["width"] > 300 and chart["height"] > 40, chart
    stages = report["stages"]
    assert len(charts["size"]["bar_widths"]) == 2 * len(stages)  # on disk and gzipped
    assert charts["size"]["bar_fills"][0] == BLUE  # the inline stylesheet applied
    baseline, final = charts["size"]["bar_widths"][0], charts["size"]["bar_widths"][2]
    assert final < baseline / 3  # int8 is drawn about 4x shorter
    latency = charts["latency-8"]
    assert latency["texts"] == [f"{s['latency_ms']['8']['p50']:.3f} ms" for s in stages]
    assert charts["gate-max_size_mb"]["bar_fills"] == ["rgb(207, 34, 46)"]  # failed: red
    worst = report["stages"][1]["details"]["sensitivity"]["nodes"]
    widths = charts["sensitivity-1"]["bar_widths"]
    assert len(widths) == min(15, len(worst)) and widths == sorted(widths, reverse=True)


def test_the_browser_check_catches_console_errors_and_outside_loads(chromium, tmp_path):
    """The harness itself: a page that logs an error and loads from outside is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><script>console.error('broken chart')</script>"
        '<img src="http://127.0.0.1:9/missing.png"></body></html>'
    )
    errors = chromium.load(bad).errors
    assert any("broken chart" in e for e in errors), errors
    assert any("missing.png" in e or "ERR_" in e for e in errors), errors


def test_a_comparison_page_shows_both_runs(two_runs, chromium, tmp_path):
    out = tmp_path / "compare.html"
    result = invoke("report", *(o / "report.json" for o in two_runs), "-o", out)
    assert result.exit_code == 0, result.stderr
    page = chromium.load(out)
    assert page.errors == []
    names = [chart["name"] for chart in page.charts]
    # the comparison's own charts, then each report's in full
    assert names[:3] == ["size", "latency-8", "metric"]
    assert names.count("gate-max_size_mb") == 2
    size = page.charts[0]
    assert len(size["bar_widths"]) == 4 and all(w > 0 for w in size["bar_widths"])
