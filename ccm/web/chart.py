"""Charts drawn on the server as SVG: no script, no library, readable without colour (values are labelled).

    bar_chart(bars, title=…, unit=…) -> Markup       labelled bars: [(label, value), …]
    line_chart(points, title=…, unit=…) -> Markup    a series over time: [(x label, value), …] (the dashboard's
                                                      usage over 24 hours and 30 days, with the ledger)

The SVG carries `role="img"` and a `<title>` for screen readers, and a visually hidden table would be the page's
business. Every label is escaped; sizes are in viewBox units, so the chart scales with its container.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 640
BAR_HEIGHT = 22
GAP = 8
LABEL_WIDTH = 140
HEIGHT = 200


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


def line_chart(points: Sequence[tuple[str, float]], *, title: str, unit: str = "") -> Markup:
    if not points:
        return Markup('<p class="muted">{}</p>').format(f"{title}: nothing yet")
    top = max(value for _, value in points) or 1
    left, right, bottom, upper = 60, WIDTH - 10, HEIGHT - 30, 10
    step = (right - left) / max(1, len(points) - 1)

    def xy(index: int, value: float) -> tuple[float, float]:
        return left + index * step, bottom - (bottom - upper) * value / top

    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in
                    enumerate(xy(i, v) for i, (_, v) in enumerate(points)))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" class="axis"/>',
        f'<text x="{left - 6}" y="{upper + 10}" text-anchor="end">{escape(_number(top))}</text>',
        f'<text x="{left - 6}" y="{bottom}" text-anchor="end">0{" " + escape(unit) if unit else ""}</text>',
        f'<path d="{path}" class="line"/>',
    ]
    every = max(1, len(points) // 6)
    for index, (label, _) in enumerate(points):
        if index % every == 0 or index == len(points) - 1:
            x, _ = xy(index, 0)
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 10}" text-anchor="middle">{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
