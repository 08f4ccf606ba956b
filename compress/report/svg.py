"""Horizontal bar charts as inline SVG, for the HTML report: no script, no network, no library.

A chart is a list of groups (a stage, or a report) with one bar per series (size and gzipped
size; baseline and final). A bar may carry a spread (a line from `low` to `high`, with a `tick`
between, for latency p50..p99 and p90) and a `marker` (a gate's limit). Colours come from CSS
classes, so the page's stylesheet decides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

WIDTH = 600
LABEL_WIDTH = 150  # stage names, left of the bars
VALUE_WIDTH = 130  # the printed value, right of the longest bar
BAR_HEIGHT = 16
BAR_GAP = 3
GROUP_GAP = 12
TOP = 8
AXIS_HEIGHT = 22
MAX_LABEL_CHARS = 22


@dataclass
class Bar:
    value: float | None  # None: not measured; the row says n/a
    text: str  # the value as printed beside the bar
    low: float | None = None  # spread: a line from low to high
    high: float | None = None
    tick: float | None = None  # a mark on the spread line (p90)
    marker: float | None = None  # a limit, drawn across the bar
    css: str = ""  # overrides the series colour (gates: pass / fail)
    tooltip: str = ""


@dataclass
class Group:
    label: str
    bars: list[Bar]  # one per series


@dataclass
class Chart:
    title: str
    groups: list[Group]
    series: list[str] = field(default_factory=list)  # legend names; none for a single series
    unit: str = ""


def render(chart: Chart, name: str) -> str:
    """The chart as a <figure> holding an <svg>; `name` goes in data-chart (tests find it)."""
    scale = _Scale(_domain_max(chart), LABEL_WIDTH, WIDTH - VALUE_WIDTH)
    rows, y = [], TOP
    for group in chart.groups:
        rows.append(_label(group.label, y, len(group.bars)))
        for index, bar in enumerate(group.bars):
            rows.append(_bar(bar, index, y, scale))
            y += BAR_HEIGHT + BAR_GAP
        y += GROUP_GAP - BAR_GAP
    height = y + AXIS_HEIGHT
    body = "".join(rows) + _axis(scale, TOP, y, chart.unit)
    legend = _legend(chart.series)
    return (
        f'<figure class="chart" data-chart="{escape(name)}">'
        f"<figcaption>{escape(chart.title)}</figcaption>{legend}"
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}"><title>{escape(chart.title)}</title>{body}</svg>'
        "</figure>"
    )


class _Scale:
    def __init__(self, maximum: float, left: float, right: float):
        self.maximum, self.left, self.right = maximum, left, right

    def __call__(self, value: float) -> float:
        return self.left + max(0.0, value) / self.maximum * (self.right - self.left)


def _domain_max(chart: Chart) -> float:
    values = [
        v
        for group in chart.groups
        for bar in group.bars
        for v in (bar.value, bar.high, bar.marker)
        if v is not None
    ]
    return max([v for v in values if v > 0], default=1.0)


def _label(text: str, y: float, bars: int) -> str:
    shown = text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"
    middle = y + (bars * (BAR_HEIGHT + BAR_GAP) - BAR_GAP) / 2
    return (
        f'<text class="label" x="{LABEL_WIDTH - 8}" y="{middle:.1f}" text-anchor="end" '
        f'dominant-baseline="middle"><title>{escape(text)}</title>{escape(shown)}</text>'
    )


def _bar(bar: Bar, series: int, y: float, scale: _Scale) -> str:
    middle = y + BAR_HEIGHT / 2
    if bar.value is None:
        return (
            f'<text class="value" x="{scale.left + 4}" y="{middle:.1f}" '
            f'dominant-baseline="middle">{escape(bar.text or "n/a")}</text>'
        )
    end = scale(bar.value)
    css = bar.css or f"s{series}"
    parts = [
        f'<rect class="bar {css}" x="{scale.left}" y="{y}" width="{end - scale.left:.1f}" '
        f'height="{BAR_HEIGHT}"><title>{escape(bar.tooltip or bar.text)}</title></rect>'
    ]
    text_x = end
    if bar.low is not None and bar.high is not None:
        low, high = scale(bar.low), scale(bar.high)
        parts.append(
            f'<line class="spread" x1="{low:.1f}" x2="{high:.1f}" y1="{middle}" y2="{middle}"/>'
            + _vline("spread", high, y + 3, y + BAR_HEIGHT - 3)
        )
        if bar.tick is not None:
            parts.append(_vline("spread", scale(bar.tick), y + 5, y + BAR_HEIGHT - 5))
        text_x = max(text_x, high)
    if bar.marker is not None:
        mark = scale(bar.marker)
        parts.append(_vline("limit", mark, y - 4, y + BAR_HEIGHT + 4))
        text_x = max(text_x, mark)
    parts.append(
        f'<text class="value" x="{text_x + 5:.1f}" y="{middle:.1f}" '
        f'dominant-baseline="middle">{escape(bar.text)}</text>'
    )
    return "".join(parts)


def _axis(scale: _Scale, top: float, bottom: float, unit: str) -> str:
    parts = []
    for fraction in (0, 0.5, 1):
        value = scale.maximum * fraction
        x = scale(value)
        parts.append(
            _vline("grid", x, top - 4, bottom)
            + f'<text class="axis" x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">'
            f"{_short(value)}{' ' + escape(unit) if fraction == 1 and unit else ''}</text>"
        )
    return "".join(parts)


def _vline(css: str, x: float, top: float, bottom: float) -> str:
    return f'<line class="{css}" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}"/>'


def _short(value: float) -> str:
    """An axis label: 3 significant digits, thousands as k, M, G (3.71M, not 3.71e+06)."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _legend(series: list[str]) -> str:
    if len(series) < 2:
        return ""
    items = "".join(
        f'<span class="key"><span class="swatch s{i}"></span>{escape(name)}</span>'
        for i, name in enumerate(series)
    )
    return f'<div class="legend">{items}</div>'
