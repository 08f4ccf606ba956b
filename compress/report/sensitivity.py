"""Sensitivity for people: a bar chart of the worst nodes (report.html and sensitivity.html)
and the Markdown of `compress analyze`. Reads the typed records that report.json and
sensitivity.json hold, so a re-rendered report draws the same."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from compress.quant.sensitivity import NodeDetails, SensitivityDetails
from compress.report.svg import Bar, Chart, Group, render

if TYPE_CHECKING:
    from compress.quant.analysis import Analysis
    from compress.report.model import Stage

CHARTED = 15
LISTED = 20
LABEL_CHARS = 18  # what fits compress.report.svg's label column: a longer name shows its end


def short_name(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else "…" + name[-(LABEL_CHARS - 1) :]


def node_bar(node: NodeDetails) -> Bar:
    error = node.score
    fused = f", with {', '.join(node.fused)}" if node.fused else ""
    return Bar(
        error * 100,
        f"{error:.2%}",
        tooltip=f"{node.node} ({node.op_type}{fused}): {error:.3%} relative error at the "
        f"model's output alone; its own output: {node.added_error:.3%} error, SQNR "
        f"{node.sqnr_db:.1f} dB",
    )


def sensitivity_chart(details: SensitivityDetails, name: str, title: str = "") -> str:
    """The worst nodes of one sensitivity, as an SVG bar chart ('' when none was scored)."""
    nodes = [n for n in details.nodes if n.score > 0][:CHARTED]
    if not nodes:
        return ""
    groups = [Group(short_name(n.node), [node_bar(n)]) for n in nodes]  # op type: tooltip
    heading = title or "Nodes that add the most error"
    measure = {
        "output_error": "relative error each causes alone at the model's output, %",
        "added_error": "relative error each adds to its own output, %",
    }[details.ranked_by]
    caption = f"{heading}: the worst {len(nodes)} of {details.scored} scored ({measure})"
    return render(Chart(caption, groups, unit=" %"), name)


def stage_charts(stages: list[Stage]) -> list[str]:
    """One chart per stage whose details carry a sensitivity (report.html)."""
    charts = []
    for index, stage in enumerate(stages):
        details = getattr(stage.details, "sensitivity", None)
        if isinstance(details, SensitivityDetails):
            title = f"{stage.name}: nodes that add the most error"
            chart = sensitivity_chart(details, f"sensitivity-{index}", title)
            if chart:
                charts.append(chart)
    return charts


def node_rows(
    details: SensitivityDetails, limit: int = LISTED
) -> tuple[list[str], list[list[str]]]:
    headers = ["rank", "node", "op", "output error", "own error", "own SQNR dB", "kept with it"]
    rows = [
        [
            str(rank),
            n.node,
            n.op_type,
            f"{n.output_error:.3%}" if n.output_error is not None else "",
            f"{n.added_error:.3%}",
            f"{n.sqnr_db:.1f}",
            ", ".join(g for g in n.group if g != n.node),
        ]
        for rank, n in enumerate(details.nodes[:limit], start=1)
    ]
    return headers, rows


def analysis_summary(result: Analysis) -> list[str]:
    """What was analysed and what it found, a line each."""
    details, analysed = result.sensitivity, result.analysed
    lines = [
        f"{result.model_file}: {analysed.type} ({analysed.origin}), "
        f"{details.quantized_nodes} node(s) quantized, {details.scored} scored on "
        f"{details.samples} samples in {details.seconds:.1f} s",
        f"method: {details.method}",
    ]
    metric = result.metric
    if metric:
        lines.append(
            f"{metric.name} on data.eval: {metric.float_value:.4f} float, "
            f"{metric.quantized:.4f} with every node quantized (drop {metric.drop:.4f})"
        )
    lines += result.notes
    return lines


def analysis_markdown(result: Analysis) -> str:
    from compress.report import markdown_table

    headers, rows = node_rows(result.sensitivity)
    lines = ["# Quantization sensitivity", "", *(f"- {line}" for line in analysis_summary(result))]
    lines += ["", *markdown_table(headers, rows), ""]
    return "\n".join(lines) + "\n"


def analysis_html(result: Analysis) -> str:
    from compress.report.html import html_table, page

    headers, rows = node_rows(result.sensitivity, limit=len(result.sensitivity.nodes))
    summary = "".join(f"<li>{escape(line)}</li>" for line in analysis_summary(result))
    chart = sensitivity_chart(result.sensitivity, "sensitivity")
    body = (
        f"<ul>{summary}</ul>"
        + (f'<div class="charts">{chart}</div>' if chart else "")
        + f"<h2>Every scored node, worst first</h2>{html_table(headers, rows)}"
    )
    return page(f"Quantization sensitivity: {result.model_file}", body)
