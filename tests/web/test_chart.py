"""The SVG charts: labelled, escaped, scaled to the largest value."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from ccm.web.chart import bar_chart, column_chart


def test_a_bar_chart_is_valid_svg_with_escaped_labels() -> None:
    svg = bar_chart([("<script>x</script>", 3), ("5xx", 1.5)], title='"><b>', unit="requests")
    root = ElementTree.fromstring(str(svg))
    assert root.get("role") == "img" and root.get("aria-label") == '"><b>'
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "<script>x</script>" in texts and "1.50 requests" in texts
    widths = [float(r.get("width", 0)) for r in root.iter("{http://www.w3.org/2000/svg}rect")]
    assert widths[0] == 2 * widths[1]


def test_a_column_chart_stacks_each_column_to_scale_with_a_legend() -> None:
    svg = column_chart(["10:00", "<11:00>"], [("a<b", [3, 1]), ("other", [1, 0])], title="tokens",
                       label=lambda value: f"${value}")
    root = ElementTree.fromstring(str(svg))
    columns = list(root.iter("{http://www.w3.org/2000/svg}g"))
    assert [g.find("{http://www.w3.org/2000/svg}title").text for g in columns] == [  # type: ignore[union-attr]
        "10:00: a<b $3 · other $1", "<11:00>: a<b $1"]  # one tooltip per column, escaped once
    heights = [float(r.get("height", 0)) for g in columns for r in g.iter("{http://www.w3.org/2000/svg}rect")]
    assert heights[0] == 3 * heights[1] == 3 * heights[2]  # the tallest column is the chart's height
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "$4" in texts and "<11:00>" in texts and "a<b" in texts and "other" in texts  # the top, axis, legend


def test_the_empty_cases() -> None:
    assert "nothing yet" in bar_chart([], title="<x>") and "&lt;x&gt;" in bar_chart([], title="<x>")
    assert "nothing yet" in column_chart(["a", "b"], [("m", [0, 0])], title="<y>")
