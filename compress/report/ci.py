"""What CI systems read: the gates as JUnit XML test cases, and the Markdown report appended to a
GitHub Actions job summary (`GITHUB_STEP_SUMMARY`)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compress.report.model import Gate, Report

SUITE = "compress.gates"


def gate_failure(gate: Gate) -> str:
    """Why a gate failed, in one line: `min_size_ratio: 3.7449 is below the minimum 100`."""
    if gate.value is None:
        return f"{gate.name}: nothing was measured (it needs data.eval); limit {gate.limit:g}"
    side = "below the minimum" if gate.name.startswith("min_") else "above the maximum"
    return f"{gate.name}: {gate.value:.4g} is {side} {gate.limit:g}"


def junit_xml(report: Report) -> str:
    """One test case per gate; a failed gate is a failed case with its value and limit."""
    gates = report.gates
    failures = sum(not g.passed for g in gates)
    counts = {"tests": str(len(gates)), "failures": str(failures), "errors": "0"}
    suites = ET.Element("testsuites", {"name": "compress", **counts})
    suite = ET.SubElement(
        suites, "testsuite", {"name": SUITE, "skipped": "0", "time": "0", **counts}
    )
    properties = ET.SubElement(suite, "properties")
    provenance = report.provenance.written()
    for key in ("model_file", "config_file", "passes", "model_sha256", "config_sha256"):
        ET.SubElement(properties, "property", name=key, value=str(provenance[key]))
    for gate in gates:
        case = ET.SubElement(suite, "testcase", classname=SUITE, name=gate.name, time="0")
        if not gate.passed:
            failure = ET.SubElement(case, "failure", message=gate_failure(gate), type="GateFailed")
            failure.text = f"value: {gate.value}\nlimit: {gate.limit:g}\n"
    if report.warnings:
        ET.SubElement(suite, "system-out").text = "\n".join(report.warnings) + "\n"
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def append_step_summary(summary_file: Path, markdown: str) -> None:
    """Append (never overwrite: earlier steps wrote there too) the report to the job summary."""
    with open(summary_file, "a", encoding="utf-8") as f:
        f.write(markdown if markdown.endswith("\n") else markdown + "\n")
