"""report.html: one self-contained page (inline CSS and SVG, no script, and a Content-Security-
Policy that forbids loading anything) with the charts a person looks at first: size, MACs,
latency with its spread per batch size, the metric, and the gates; then the stage table, the
notes, the warnings, and how and where everything was measured."""

from __future__ import annotations

from html import escape

from compress.report import (
    fmt_value,
    human_count,
    measured_with,
    speedup_interval,
    stage_label,
    stage_notes,
    table_rows,
)
from compress.report.compare import Comparison, comparison_rows
from compress.report.generation import generation_heading, generation_rows
from compress.report.model import Gate, LatencyFigures, Metric, Report
from compress.report.sensitivity import stage_charts
from compress.report.svg import Bar, Chart, Group, render

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;
max-width:1440px;padding:0 1.5rem;color:#1f2328;background:#fff}
h1{font-size:1.6rem;margin:0 0 .3rem}h2{font-size:1.25rem;margin:2rem 0 .6rem}
h3{font-size:1.05rem;margin:1.2rem 0 .4rem}.sub{color:#59636e;margin:0 0 1rem}
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.card{border:1px solid #d1d9e0;border-radius:8px;padding:.6rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.35rem}.card span{color:#59636e;font-size:.85rem}
.card.fail{border-color:#cf222e;background:#ffebe9}.card.pass{border-color:#1a7f37}
.charts{display:flex;flex-wrap:wrap;gap:1rem 2.5rem}
figure.chart{margin:0}figcaption{font-weight:600;margin:.2rem 0}
svg text{font:12px system-ui,sans-serif;fill:#1f2328}svg text.axis{fill:#59636e;font-size:11px}
.bar.s0,.swatch.s0{fill:#0969da;background:#0969da}.bar.s1,.swatch.s1{fill:#fb8f44;
background:#fb8f44}.bar.pass{fill:#1a7f37}.bar.fail{fill:#cf222e}
line.spread{stroke:#1f2328;stroke-width:1.5}line.grid{stroke:#d1d9e0}
line.limit{stroke:#1f2328;stroke-width:3}
.legend{font-size:.85rem;color:#59636e}.key{margin-right:1rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:-1px}
table{border-collapse:collapse;margin:.5rem 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d1d9e0;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f6f8fa}
table.facts td{text-align:left}
.badge{font-weight:600;padding:0 .4rem;border-radius:4px;color:#fff}
.badge.pass{background:#1a7f37}.badge.fail{background:#cf222e}
.warning{background:#fff8c5;border-left:4px solid #d4a72c;padding:.3rem .7rem;margin:.3rem 0}
section.report{border-top:2px solid #d1d9e0;margin-top:2rem}
"""
# Nothing may be fetched: no script, no font, no image from anywhere; styles are inline.
POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def to_html(report: Report) -> str:
    title = "Compression report: " + report.provenance.model_file
    return page(title, report_body(report))


def comparison_to_html(comparison: Comparison, named: dict[str, Report]) -> str:
    """The comparison's table and charts (each run's baseline and final stage), then every
    report in full."""
    entries = comparison.reports
    series = ["baseline", "final stage"]

    def chart(title: str, bar, figure: str, unit: str = "") -> Chart:
        groups = [
            Group(e.name, [bar(getattr(e.baseline, figure)), bar(getattr(e.final, figure))])
            for e in entries
        ]
        return Chart(title, groups, series, unit)

    out = [render(chart("Size (KB)", lambda b: _kb_bar(b), "size_bytes", " KB"), "size")]
    for batch in comparison.batch_sizes:
        latency = chart(
            f"Latency at batch {batch} (ms): bar p50, line to p99, tick p90",
            lambda figures, batch=batch: latency_bar(figures.get(str(batch))),
            "latency_ms",
            " ms",
        )
        out.append(render(latency, f"latency-{batch}"))
    metrics = ", ".join(sorted({e.metric for e in entries}))
    out.append(render(chart(f"Metric ({metrics})", metric_bar, "metric"), "metric"))
    headers, rows = comparison_rows(comparison)
    body = [
        "<h2>Side by side</h2>",
        html_table(headers, rows),
        "<p>Each column is a run's final stage; ratios and speedup are against its own "
        "baseline.</p>",
        f'<h2>Charts</h2><div class="charts">{"".join(out)}</div>',
    ]
    for name, report in named.items():
        body.append(
            f'<section class="report"><h2>{escape(name)}</h2>{report_body(report, 3)}</section>'
        )
    return page(f"{len(named)} compression reports compared", "".join(body))


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )


def report_body(report: Report, heading: int = 2) -> str:
    """Everything about one report, its section headings at level `heading`."""
    h = f"h{heading}"
    parts = [f'<p class="sub">{escape(subtitle(report))}</p>', summary_cards(report)]
    parts.append(f'<{h}>Charts</{h}><div class="charts">{charts(report)}</div>')
    headers, rows = table_rows(report)
    parts.append(f"<{h}>Stages</{h}>{html_table(headers, rows)}")
    if report.generation is not None:
        names = [stage_label(stage) for stage in report.stages]
        by_stage = [stage.generation or {} for stage in report.stages]
        headers, rows = generation_rows(names, by_stage, report.generation.batch_sizes)
        title = escape(generation_heading(report.generation))
        parts.append(f"<{h}>{title}</{h}>{html_table(headers, rows)}")
    if report.gates:
        parts.append(f"<{h}>Gates</{h}>{gates_table(report.gates)}")
    notes = stage_notes(report)
    if notes:
        items = "".join(f"<li>{escape(note)}</li>" for note in notes)
        parts.append(f"<{h}>What the passes did</{h}><ul>{items}</ul>")
    for stage in report.stages:
        table = stage.details.table(report.metric) if stage.details is not None else None
        if table is not None:
            title = escape(f"{stage.name}: {table.title}")
            parts.append(f"<{h}>{title}</{h}>{html_table(table.headers, table.rows)}")
    if report.warnings:
        warnings = "".join(f'<p class="warning">{escape(w)}</p>' for w in report.warnings)
        parts.append(f"<{h}>Warnings</{h}>{warnings}")
    parts.append(f"<{h}>Measured with</{h}><p>{escape(measured_with(report))}.</p>")
    facts = html_table(["environment", ""], [[k, str(v)] for k, v in environment(report)])
    parts.append(facts.replace("<table>", '<table class="facts">', 1))
    return "".join(parts)


def subtitle(report: Report) -> str:
    provenance = report.provenance
    model, config, passes = provenance.model_file, provenance.config_file, provenance.passes
    overrides = provenance.config_overrides
    return (
        f"{model} ({provenance.source_format})"
        + (f" with {config}" if config else "")
        + (f" --set {overrides}" if overrides else "")
        + (f": {passes}" if passes else "")
    )


def environment(report: Report) -> list[tuple[str, object]]:
    provenance = report.provenance.written()
    for key in ("model_folder", "tokenizer"):  # records: one line each (files in report.json)
        if (record := getattr(report.provenance, key)) is not None:
            provenance[key] = record.describe()
    return list(report.environment.written().items()) + list(provenance.items())


def summary_cards(report: Report) -> str:
    s, gates = report.summary, report.gates
    cards = [
        (f"{s.size_ratio:.2f}x", "smaller", ""),
        (f"{s.gzip_ratio:.2f}x", "smaller gzipped", ""),
        (f"{s.speedup:.2f}x", f"faster at batch {s.speedup_batch}{speedup_interval(s)}", ""),
        (fmt_value(s.accuracy_drop, ".4f"), f"{report.metric} drop", ""),
    ]
    if gates:
        failed = [g.name for g in gates if not g.passed]
        verdict = "all gates pass" if not failed else "failed: " + ", ".join(failed)
        cards.append(
            (f"{len(gates) - len(failed)}/{len(gates)}", verdict, "fail" if failed else "pass")
        )
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card {css}"><b>{escape(value)}</b><span>{escape(label)}</span></div>'
            for value, label, css in cards
        )
        + "</div>"
    )


def charts(report: Report) -> str:
    """Every chart of one report, each in its <figure>."""
    stages = report.stages
    labels = [stage_label(stage) for stage in stages]
    size = Chart(
        "Size per stage (KB)",
        [
            Group(label, [_kb_bar(stage.size_bytes), _kb_bar(stage.gzip_bytes)])
            for label, stage in zip(labels, stages, strict=True)
        ],
        ["on disk", "gzipped"],
        " KB",
    )
    out = [render(size, "size")]
    macs = [
        Group(lb, [Bar(s.macs, human_count(s.macs))]) for lb, s in zip(labels, stages, strict=True)
    ]
    out.append(render(Chart("MACs per sample", macs), "macs"))
    for batch in report.batch_sizes:
        groups = [
            Group(label, [latency_bar(stage.latency_ms.get(str(batch)))])
            for label, stage in zip(labels, stages, strict=True)
        ]
        title = f"Latency at batch {batch} (ms): bar p50, line to p99, tick p90"
        out.append(render(Chart(title, groups, unit=" ms"), f"latency-{batch}"))
    if any(stage.metric for stage in stages):
        groups = [
            Group(label, [metric_bar(stage.metric)])
            for label, stage in zip(labels, stages, strict=True)
        ]
        out.append(render(Chart(f"{report.metric} per stage", groups), "metric"))
    out += stage_charts(stages)  # the nodes int8 hurts most
    out += [render(gate_chart(gate), f"gate-{gate.name}") for gate in report.gates]
    return "".join(out)


def _kb_bar(size_bytes: int) -> Bar:
    return Bar(size_bytes / 1024, f"{size_bytes / 1024:.1f} KB")


def latency_bar(latency: LatencyFigures | None) -> Bar:
    if latency is None:
        return Bar(None, "not measured")
    p50, p90, p99 = latency.p50, latency.p90, latency.p99
    return Bar(
        p50,
        f"{p50:.3f} ms",
        low=p50,
        high=p99,
        tick=p90,
        tooltip=f"p50 {p50:.3f} ms, p90 {p90:.3f} ms, p99 {p99:.3f} ms, {latency.runs} runs",
    )


def metric_bar(metric: Metric | None) -> Bar:
    value = metric.value if metric else None
    return Bar(value, fmt_value(value, ".4f"))


def gate_chart(gate: Gate) -> Chart:
    verdict = "pass" if gate.passed else "FAIL"
    bar = Bar(
        gate.value,
        f"{fmt_value(gate.value, '.4g')} (limit {gate.limit:g})",
        marker=gate.limit,
        css="pass" if gate.passed else "fail",
    )
    return Chart(f"Gate {gate.name}: {verdict}", [Group("value vs limit", [bar])])


def gates_table(gates: list[Gate]) -> str:
    rows = [[g.name, f"{g.limit:g}", fmt_value(g.value, ".4f"), badge(g.passed)] for g in gates]
    return html_table(["gate", "limit", "value", "result"], rows, raw_last=True)


def badge(passed: bool) -> str:
    return (
        '<span class="badge pass">pass</span>' if passed else '<span class="badge fail">FAIL</span>'
    )


def html_table(headers: list[str], rows: list[list[str]], raw_last: bool = False) -> str:
    """A table of escaped cells; `raw_last` keeps the last column's markup (badges we made)."""

    def cell(value: str, last: bool) -> str:
        return value if last and raw_last else escape(value)

    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{cell(v, i == len(row) - 1)}</td>" for i, v in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
