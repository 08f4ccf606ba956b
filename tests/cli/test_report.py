"""`compress report` re-renders and compares runs; JUnit gates and the GitHub job summary."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers.cli import invoke
from tests.helpers.paths import SAMPLES


def _reports(two_runs):
    return [out / "report.json" for out in two_runs]


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
def test_one_report_renders_as_the_run_wrote_it(two_runs, fmt):
    result = invoke("report", two_runs[0] / "report.json", "--format", fmt)
    assert result.exit_code == 0, result.stderr
    written = (two_runs[0] / f"report.{fmt}").read_text()
    assert result.stdout == written


def test_one_report_as_a_terminal_table(two_runs):
    result = invoke("report", two_runs[0] / "report.json")
    assert result.exit_code == 0, result.stderr
    assert "quantize.static" in result.stdout and "gate max_size_mb" in result.stdout
    assert "FAIL" in result.stdout


def test_two_runs_compare_side_by_side_as_json(two_runs):
    result = invoke("report", *_reports(two_runs), "--format", "json")
    assert result.exit_code == 0, result.stderr
    comparison = json.loads(result.stdout)
    static, dynamic = comparison["reports"]
    assert (static["name"], dynamic["name"]) == ("static", "dynamic")
    assert (static["final"]["stage"], dynamic["final"]["stage"]) == (
        "quantize.static",
        "quantize.dynamic",
    )
    assert static["baseline"]["size_bytes"] == dynamic["baseline"]["size_bytes"]  # same model
    # static int8 quantizes the convolutions too: smaller than dynamic's
    assert static["final"]["size_bytes"] < dynamic["final"]["size_bytes"]
    assert [g["name"] for g in dynamic["gates"] if not g["passed"]] == [
        "min_size_ratio",
        "max_size_mb",
    ]
    assert comparison["batch_sizes"] == [8]


@pytest.mark.parametrize("fmt", ["table", "md"])
def test_two_runs_compare_as_text(two_runs, fmt):
    result = invoke("report", *_reports(two_runs), "--format", fmt)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()

    def cells(label):  # the row of one figure: its value for each run, in order
        line = next(line for line in lines if line.strip(" |").startswith(label))
        return [c.strip() for c in re.split(r"\s{2,}|\|", line.strip(" |")) if c.strip()][1:]

    assert cells("passes") == ["quantize.static", "quantize.dynamic"]
    assert cells("size ratio")[0] == "3.74x"
    assert cells("gates") == ["FAIL: max_size_mb", "FAIL: min_size_ratio, max_size_mb"]


def test_output_file_takes_its_format_from_the_suffix(two_runs, tmp_path):
    out = tmp_path / "both.md"
    result = invoke("report", *_reports(two_runs), "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_text().startswith("# Compression reports compared")
    assert not list(tmp_path.glob(".*partial"))
    again = invoke("report", *_reports(two_runs), "-o", out, "--format", "json")
    assert again.exit_code == 2 and "the file exists; pass --force" in again.stderr
    assert out.read_text().startswith("# Compression reports compared")  # left as it was
    forced = invoke("report", *_reports(two_runs), "-o", out, "--format", "json", "--force")
    assert forced.exit_code == 0 and out.read_text().startswith("{")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "given.json: not found"),
        ("{not json", "not JSON"),
        ('{"stages": []}', "not a compress report (no summary"),
        ("fifo", "is a named pipe (FIFO), not a report.json file"),
        ("/dev/zero", "is a character device"),
        ("large", "over the limit of 67,108,864 bytes"),
    ],
)
def test_bad_report_files_are_refused(tmp_path, content, needle):
    """Never read until memory runs out, never blocked on a pipe: only a regular file, and only
    as much of it as a report can be. (Not named report.json: the session's schema check would
    read them.)"""
    path = tmp_path / "given.json"
    if content == "fifo":
        os.mkfifo(path)
    elif content == "large":
        with open(path, "wb") as f:
            f.truncate(65 << 20)
        path.chmod(0o644)
    elif content == "/dev/zero":
        path = Path(content)
    elif content is not None:
        path.write_text(content)
    result = invoke("report", path)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_junit_has_one_case_per_gate_and_a_failed_gate_fails(two_runs, cnn_config, tmp_path):
    junit = tmp_path / "gates.xml"
    cnn_config.write_text(
        cnn_config.read_text() + "gates: {min_size_ratio: 3, max_size_mb: 0.01}\n"
    )
    result = invoke(
        "run", SAMPLES / "digits_cnn.pt2", "-c", cnn_config, "-o", tmp_path / "o", "--quiet",
        "--junit", junit,
    )  # fmt: skip
    assert result.exit_code == 3
    suites = ET.parse(junit).getroot()  # parses: well-formed XML
    [suite] = suites.findall("testsuite")
    assert (suites.tag, suite.get("tests"), suite.get("failures")) == ("testsuites", "2", "1")
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert set(cases) == {"min_size_ratio", "max_size_mb"}
    assert cases["min_size_ratio"].find("failure") is None
    failure = cases["max_size_mb"].find("failure")
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    value = next(g["value"] for g in report["gates"] if g["name"] == "max_size_mb")
    assert failure.get("message") == f"max_size_mb: {value:.4g} is above the maximum 0.01"
    assert f"value: {value}" in failure.text and "limit: 0.01" in failure.text


def test_junit_into_a_missing_folder_is_refused_before_the_run(cnn_config, tmp_path):
    out = tmp_path / "o"
    result = invoke(
        "run", SAMPLES / "digits_cnn.pt2", "-c", cnn_config, "-o", out,
        "--junit", tmp_path / "nowhere" / "gates.xml",
    )  # fmt: skip
    assert (
        result.exit_code == 2 and "--junit" in result.stderr and "does not exist" in result.stderr
    )
    assert not out.exists()


def test_markdown_report_is_appended_to_the_github_step_summary(cnn_config, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("## earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = tmp_path / "o"
    result = invoke("run", SAMPLES / "digits_cnn.pt2", "-c", cnn_config, "-o", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert summary.read_text() == "## earlier step\n" + (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("where", "value", "needle"),
    [
        (("stages", 0, "size_bytes"), "1" + "0" * 400, "an integer of 401 digits"),
        (("stages", 0, "size_bytes"), "-5", "greater than or equal to 0"),
        (("stages", 0, "size_bytes"), "1e400", "finite number"),
        (("batch_sizes", 0), "7", "no batch 7"),
    ],
)
def test_a_report_with_figures_compress_never_writes_is_refused(
    two_runs, tmp_path, where, value, needle
):
    report = json.loads((two_runs[0] / "report.json").read_text())
    node = report
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = "__VALUE__"
    path = tmp_path / "given.json"  # not report.json: the session's schema check reads those
    path.write_text(json.dumps(report).replace('"__VALUE__"', value))
    for fmt in ("table", "md", "html", "json"):
        result = invoke("report", path, "--format", fmt)
        assert result.exit_code == 2, result.stderr
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
