"""The SVG charts: labelled, escaped, scaled to the largest value."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from ccm.web.chart import bar_chart, line_chart


def test_a_bar_chart_is_valid_svg_with_escaped_labels() -> None:
    svg = bar_chart([("<script>x</script>", 3), ("5xx", 1.5)], title='"><b>', unit="requests")
    root = ElementTree.fromstring(str(svg))
    assert root.get("role") == "img" and root.get("aria-label") == '"><b>'
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "<script>x</script>" in texts and "1.50 requests" in texts
    widths = [float(r.get("width", 0)) for r in root.iter("{http://www.w3.org/2000/svg}rect")]
    assert widths[0] == 2 * widths[1]


def test_a_line_chart_and_the_empty_cases() -> None:
    root = ElementTree.fromstring(str(line_chart([(f"{h}:00", h * 2.0) for h in range(24)], title="tokens")))
    assert root.find("{http://www.w3.org/2000/svg}path") is not None
    assert "nothing yet" in bar_chart([], title="<x>") and "&lt;x&gt;" in bar_chart([], title="<x>")
