"""A small SVG line-chart writer for the benchmarks' cost curves (no plotting library).

:func:`chart` draws one panel: series of ``(x, y)`` points on a logarithmic x axis and a
linear (from 0) or logarithmic y axis, with ticks, a legend and the values at the points;
:func:`page` puts panels side by side into one SVG document.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
WIDTH, HEIGHT = 380, 300
LEFT, RIGHT, TOP, BOTTOM = 58, 34, 40, 78


@dataclass(frozen=True)
class Chart:
    """One panel: its title, axis labels and series (label -> points)."""

    title: str
    xlabel: str
    ylabel: str
    series: dict[str, list[tuple[float, float]]]
    logy: bool = False


def _ticks_log(lo: float, hi: float) -> list[float]:
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return [10.0**e for e in range(first, last + 1)]


def _ticks_linear(hi: float) -> list[float]:
    if hi <= 0:
        return [0.0, 1.0]
    step = 10 ** math.floor(math.log10(hi))
    for mult in (1, 2, 5, 10):
        if hi / (step * mult) <= 5:
            step *= mult
            break
    return [i * step for i in range(int(hi / step) + 2)]


def _label(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.1f}"
    return f"{v:.2g}"


def chart(c: Chart, x0: float = 0.0) -> str:
    """The panel's SVG elements, its left edge at ``x0``."""
    points = [p for pts in c.series.values() for p in pts if p[1] == p[1] and p[1] > 0]
    if not points:
        return ""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    xticks = _ticks_log(min(xs), max(xs))
    yticks = _ticks_log(min(ys), max(ys)) if c.logy else _ticks_linear(max(ys) * 1.1)
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    lx0, lx1 = math.log10(xticks[0]), math.log10(xticks[-1])

    def px(x: float) -> float:
        return x0 + LEFT + (math.log10(x) - lx0) / ((lx1 - lx0) or 1) * w

    def py(y: float) -> float:
        if c.logy:
            l0, l1 = math.log10(yticks[0]), math.log10(yticks[-1])
            frac = (math.log10(y) - l0) / ((l1 - l0) or 1)
        else:
            frac = y / (yticks[-1] or 1)
        return TOP + h - frac * h

    out = [
        f'<text x="{x0 + WIDTH / 2}" y="18" text-anchor="middle" font-weight="bold">'
        f"{escape(c.title)}</text>",
        f'<rect x="{x0 + LEFT}" y="{TOP}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
    ]
    for t in xticks:
        x = px(t)
        out.append(f'<line x1="{x}" y1="{TOP}" x2="{x}" y2="{TOP + h}" stroke="#eee"/>')
        out.append(f'<text x="{x}" y="{TOP + h + 14}" text-anchor="middle">{_label(t)}</text>')
    for t in yticks:
        y = py(t) if (t > 0 or not c.logy) else TOP + h
        out.append(f'<line x1="{x0 + LEFT}" y1="{y}" x2="{x0 + LEFT + w}" y2="{y}" stroke="#eee"/>')
        out.append(f'<text x="{x0 + LEFT - 4}" y="{y + 4}" text-anchor="end">{_label(t)}</text>')
    out.append(
        f'<text x="{x0 + LEFT + w / 2}" y="{TOP + h + 30}" text-anchor="middle">'
        f"{escape(c.xlabel)}</text>"
    )
    out.append(
        f'<text transform="translate({x0 + 14},{TOP + h / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(c.ylabel)}</text>'
    )
    for i, (label, pts) in enumerate(c.series.items()):
        colour = COLOURS[i % len(COLOURS)]
        good = [(px(x), py(y), y) for x, y in pts if y == y and y > 0]
        if len(good) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in good)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        for x, y, v in good:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
            out.append(
                f'<text x="{x + 4:.1f}" y="{y - 5:.1f}" fill="{colour}" font-size="9">'
                f"{_label(v)}</text>"
            )
        ly = TOP + h + 46 + 14 * (i // 2)
        lx = x0 + LEFT + (i % 2) * (w / 2)
        out.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{lx + 14}" y="{ly + 1}">{escape(label)}</text>')
    return "\n".join(out)


def page(charts: list[Chart], title: str) -> str:
    """One SVG document with the panels side by side."""
    width = WIDTH * len(charts)
    body = "\n".join(chart(c, i * WIDTH) for i, c in enumerate(charts))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" '
        f'viewBox="0 0 {width} {HEIGHT}" font-family="sans-serif" font-size="11">\n'
        f"<title>{escape(title)}</title>\n"
        f'<rect width="{width}" height="{HEIGHT}" fill="white"/>\n{body}\n</svg>\n'
    )
