"""Charts drawn on the server as SVG: no script, no library, readable without colour (values are labelled or tabled).

    bar_chart(bars, title=…, unit=…) -> Markup       labelled bars: [(label, value), …]
    column_chart(columns, series, title=…, label=…)  columns over time stacked by series, with a legend (the
                                                      usage charts: 24 hours and 30 days, by model or token class)

The SVG carries `role="img"` and a `<title>` for screen readers (each column's part its own `<title>` too); the
numbers themselves are the page's business, in a table beside the chart. Every label is escaped; sizes are in
viewBox units, so the chart scales with its container.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

WIDTH = 640
BAR_HEIGHT = 22
GAP = 8
LABEL_WIDTH = 140
HEIGHT = 200
LEGEND_COLUMNS = 3


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, unit: str = "") -> Markup:
    if not bars:
        return Markup('<p class="muted">{}</p>').format(f"{title}: nothing yet")
    top = max(value for _, value in bars) or 1
    plot = WIDTH - LABEL_WIDTH - 70
    height = len(bars) * (BAR_HEIGHT + GAP) + GAP
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    for index, (label, value) in enumerate(bars):
        y = GAP + index * (BAR_HEIGHT + GAP)
        width = max(1.0, plot * value / top)
        parts.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y + BAR_HEIGHT * 0.7:.1f}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{width:.1f}" height="{BAR_HEIGHT}" class="bar bar-{index % 6}"/>'
            f'<text x="{LABEL_WIDTH + width + 6:.1f}" y="{y + BAR_HEIGHT * 0.7:.1f}">'
            f'{escape(_number(value))}{" " + escape(unit) if unit else ""}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def column_chart(columns: Sequence[str], series: Sequence[tuple[str, Sequence[int]]], *, title: str,
                 label: Callable[[int], str] = lambda value: f"{value:,}", every: int = 1) -> Markup:
    """Columns over time, each stacked by series (a model, a token class), with a legend. `columns` are the x
    labels (every `every`-th is written under its column); each series has one whole-number value per column
    (tokens, requests, nano-dollars: `label` formats them, so money never becomes a float here)."""
    totals = [sum(values[i] for _, values in series) for i in range(len(columns))]
    if not any(totals):
        return Markup('<p class="muted">{}</p>').format(f"{title}: nothing yet")
    top = max(totals)
    left, right, upper, bottom = 78, WIDTH - 8, 12, HEIGHT - 34
    slot = (right - left) / len(columns)
    legend_rows = -(-len(series) // LEGEND_COLUMNS)
    height = HEIGHT + legend_rows * 20
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" class="axis"/>',
        f'<line x1="{left}" y1="{upper}" x2="{right}" y2="{upper}" class="axis"/>',
        f'<text x="{left - 6}" y="{upper + 4}" text-anchor="end">{escape(label(top))}</text>',
        f'<text x="{left - 6}" y="{bottom}" text-anchor="end">0</text>',
    ]
    names = [escape(name) for name, _ in series]  # escaped once, not once per column
    for index, column in enumerate(columns):
        if not totals[index]:
            continue
        x = left + index * slot + slot * 0.1
        base = float(bottom)
        rects, said = [], []
        for number, (_, values) in enumerate(series):
            value = values[index]
            if not value:
                continue
            size = (bottom - upper) * value / top
            base -= size
            rects.append(f'<rect x="{x:.1f}" y="{base:.1f}" width="{slot * 0.8:.1f}" height="{max(size, 0.5):.1f}" '
                         f'class="bar bar-{number % 6}"/>')
            said.append(f"{series[number][0]} {label(value)}")
        # one tooltip per column (what a pointer over it shows): its label and each part's value
        parts.append(f'<g><title>{escape(column)}: {escape(" · ".join(said))}</title>{"".join(rects)}</g>')
    for index in sorted({*range(0, len(columns), every), len(columns) - 1}):  # every `every`-th, and the last
        parts.append(f'<text x="{left + (index + 0.5) * slot:.1f}" y="{bottom + 16}" text-anchor="middle">'
                     f'{escape(columns[index])}</text>')
    for number in range(len(series)):
        row, place = divmod(number, LEGEND_COLUMNS)
        x, y = left + place * (right - left) / LEGEND_COLUMNS, HEIGHT - 4 + row * 20
        parts.append(f'<rect x="{x:.1f}" y="{y - 11}" width="12" height="12" class="bar bar-{number % 6}"/>'
                     f'<text x="{x + 17:.1f}" y="{y}">{names[number]}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
