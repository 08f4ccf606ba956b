"""sweep.md and sweep.html: every variant with its settings and figures, the best one, and the
Pareto fronts of accuracy against latency and against size. The charts are inline SVG scatter
plots (no script): the front's variants joined by a line, the dominated ones drawn apart in
grey, failed gates hollow."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from compress.report import fmt_value, markdown_table

if TYPE_CHECKING:
    from compress.sweep.runner import SweepSummary, VariantRow

WIDTH, HEIGHT = 560, 340
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 20, 50


def variant_rows(summary: SweepSummary) -> tuple[list[str], list[list[str]]]:
    headers = ["variant", "settings", "status", "size KB", f"p50 ms @{summary.batch}"]
    headers += [summary.metric or "metric", "gates", "Pareto front"]
    rows = []
    for row in summary.variants:
        gates = "FAIL: " + ", ".join(row.failed_gates) if row.failed_gates else "pass"
        rows.append(
            [
                row.name + (" (best)" if row.name == summary.best else ""),
                ", ".join(f"{k}={v}" for k, v in row.settings.items()),
                row.status.replace("_", " ")
                + (f": {row.reason}" if row.reason and row.status != "gate_failed" else ""),
                fmt_value(row.size_bytes / 1024 if row.size_bytes else None, ".1f"),
                fmt_value(row.p50_ms, ".3f"),
                fmt_value(row.metric, ".4f"),
                gates if row.status in ("ok", "gate_failed") else "",
                ", ".join(row.front) or ("dominated" if row.p50_ms is not None else ""),
            ]
        )
    return headers, rows


def best_line(summary: SweepSummary) -> str:
    if summary.best is None:
        return "No variant passed its gates: nothing was copied to the output folder."
    by = {
        "latency": "the fastest that passes the gates (within 3%, the smaller)",
        "size": "the smallest that passes the gates",
        "accuracy": "the most accurate that passes the gates",
    }[summary.objective]
    return f"Best: **{summary.best}**, {by}; its model.onnx and reports are in the output folder."


def sweep_markdown(summary: SweepSummary) -> str:
    headers, rows = variant_rows(summary)
    lines = ["# Sweep", "", best_line(summary), "", *markdown_table(headers, rows), ""]
    for name, names in summary.fronts.items():
        lines.append(f"- Pareto front, {summary.metric or 'metric'} against {name}: "
                     + (", ".join(names) or "none"))  # fmt: skip
    return "\n".join(lines) + "\n"


def sweep_html(summary: SweepSummary) -> str:
    from compress.report.html import html_table, page

    headers, rows = variant_rows(summary)
    measured = [r for r in summary.variants if r.p50_ms is not None]
    charts = [
        scatter(measured, summary, "p50_ms", f"p50 ms at batch {summary.batch}", "latency"),
        scatter(measured, summary, "size_bytes", "size KB", "size"),
    ]
    body = (
        f"<p>{escape(best_line(summary).replace('**', ''))}</p>"
        + f'<div class="charts">{"".join(charts)}</div>'
        + f"<h2>Variants</h2>{html_table(headers, rows)}"
    )
    return page(f"Sweep: {summary.model}", body)


def scatter(rows: list[VariantRow], summary: SweepSummary, field: str, label: str, name: str):
    """Accuracy (up) against `field` (right); the front of `name` joined by a line."""
    metric = summary.metric or "metric"
    title = f"{metric} against {label}: the Pareto front joined, dominated variants in grey"
    if not rows:
        return f'<figure class="chart"><figcaption>{escape(title)}</figcaption></figure>'
    scale = 1 / 1024 if field == "size_bytes" else 1
    xs = [getattr(r, field) * scale for r in rows]
    ys = [r.metric if r.metric is not None else 0.0 for r in rows]
    x_low, x_high = _span(xs)
    y_low, y_high = _span(ys)

    def x(value: float) -> float:
        return LEFT + (value - x_low) / (x_high - x_low) * (WIDTH - LEFT - RIGHT)

    def y(value: float) -> float:
        return HEIGHT - BOTTOM - (value - y_low) / (y_high - y_low) * (HEIGHT - TOP - BOTTOM)

    parts = [
        f'<line class="grid" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
        f'y2="{HEIGHT - BOTTOM}"/>',
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>',
        f'<text class="axis" x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 12}" '
        f'text-anchor="middle">{escape(label)} ({x_low:.3g} to {x_high:.3g})</text>',
        f'<text class="axis" x="14" y="{(TOP + HEIGHT - BOTTOM) / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(TOP + HEIGHT - BOTTOM) / 2:.0f})">{escape(metric)} '
        f"({y_low:.4g} to {y_high:.4g})</text>",
    ]
    on_front = sorted((xv, yv) for r, xv, yv in zip(rows, xs, ys, strict=True) if name in r.front)
    if len(on_front) > 1:
        points = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in on_front)
        parts.append(f'<polyline class="front" fill="none" stroke="#0969da" points="{points}"/>')
    for row, xv, yv in zip(rows, xs, ys, strict=True):
        css = "front" if name in row.front else "dominated"
        fill = {"front": "#0969da", "dominated": "#8c959f"}[css]
        hollow = 'fill="#fff" stroke-width="2"' if row.failed_gates else f'fill="{fill}"'
        tip = f"{row.name}: {', '.join(f'{k}={v}' for k, v in row.settings.items())}"
        parts.append(
            f'<circle class="{css}" data-variant="{escape(row.name)}" cx="{x(xv):.1f}" '
            f'cy="{y(yv):.1f}" r="6" stroke="{fill}" {hollow}><title>{escape(tip)}</title>'
            "</circle>"
        )
        parts.append(f'<text x="{x(xv) + 8:.1f}" y="{y(yv) - 8:.1f}">{escape(row.name)}</text>')
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img">{"".join(parts)}</svg>'
    )
    return (
        f'<figure class="chart" data-chart="pareto-{name}"><figcaption>{escape(title)}'
        f"</figcaption>{svg}</figure>"
    )


def _span(values: list[float]) -> tuple[float, float]:
    """The axis range: the values with 8% of room on each side (a single value gets some)."""
    low, high = min(values), max(values)
    room = (high - low) * 0.08 or abs(high) * 0.05 or 1.0
    return low - room, high + room
