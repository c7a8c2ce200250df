"""The manager's start-up as an SVG timeline, as ``systemd-analyze plot`` draws a boot: pure.

Input: what ``GetTimeline`` returns (:mod:`busmgr.timeline`): when the manager started, and for
each instance its first run: ``Starting``, ``Running``, ``Stopped`` and ``Failures`` times
(microseconds since the epoch, 0 for never), its ``State``, ``Goal``, ``Result``, ``Reason`` and
whether it is a ``Task``.

Output: one row per instance, in the order they started. Its bar (a ``rect`` of class ``bar``)
goes from ``starting`` to when it was ready: ``running`` for a service, ``stopped`` for a task
(its work is its start-up), ``stopped`` or its first failure for a start that failed, and
``now`` for one still on its way. The bar's colour says the state the instance is in now
(running, starting, stopping, failed, stopped); each failure is a red mark (class
``failure``) on its row, with the reason as a tooltip; the label gives the time to ready. A
time axis runs along the top. So a glance tells what started when, what was slow, and what
failed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

__all__ = ["COLOURS", "to_svg"]

#: Fill colour of a bar by what the instance is now.
COLOURS = {
    "running": "#4caf50",
    "starting": "#ffc107",
    "stopping": "#ff9800",
    "failed": "#e53935",
    "stopped": "#90a4ae",
}
_STARTING = frozenset({"starting", "pre-start", "spawned", "post-start"})
_STOPPING = frozenset({"pre-stop", "stopping", "killed", "post-stop"})

ROW = 22
BAR = 14
TOP = 60
LEFT = 10
LABEL_WIDTH = 260
AREA_WIDTH = 900


def _kind(run: Mapping[str, Any]) -> str:
    state = str(run.get("State", ""))
    if state == "running" and run.get("Goal") == "start":
        return "running"
    if state in _STARTING:
        return "starting"
    if state in _STOPPING:
        return "stopping"
    if run.get("Result") == "failed":
        return "failed"
    return "stopped"


def _end(run: Mapping[str, Any], now: int) -> int:
    """When the run's start-up ended (µs)."""
    running, stopped = int(run.get("Running", 0)), int(run.get("Stopped", 0))
    failures = [int(t) for t in run.get("Failures", [])]
    if running and not run.get("Task"):
        return running
    if stopped:
        return stopped
    if failures:
        return failures[0]
    return running or now


def _step(span: float) -> float:
    """A round tick interval giving about ten ticks over ``span`` seconds."""
    raw = max(span / 10, 1e-6)
    power = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * power:
            return mult * power
    return 10 * power  # pragma: no cover


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f}ms"
    return f"{value:.3g}s" if value < 100 else f"{value:.0f}s"


def to_svg(startup: int, runs: Sequence[Mapping[str, Any]], now: int) -> str:
    """The SVG document (text) for these runs; ``now`` (µs) ends bars still under way."""
    runs = sorted(runs, key=lambda r: (int(r.get("Starting", 0)), str(r.get("Job", ""))))
    origin = min([startup, *(int(r["Starting"]) for r in runs)]) if runs else startup
    last = max([origin + 1, *(_end(r, now) for r in runs)])
    for run in runs:
        last = max([last, *(int(t) for t in run.get("Failures", []))])
    span = (last - origin) / 1e6
    scale = AREA_WIDTH / max(span, 1e-3)  # px per second
    width = LEFT + LABEL_WIDTH + AREA_WIDTH + 40
    height = TOP + ROW * max(len(runs), 1) + 20

    def x(usec: int) -> float:
        return LEFT + LABEL_WIDTH + (usec - origin) / 1e6 * scale

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="20" font-size="14" font-weight="bold">'
        f"busmgr start-up: {len(runs)} instance{'s' if len(runs) != 1 else ''}, "
        f"{_seconds(span)}</text>",
    ]
    step = _step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        tx = x(origin + int(tick * 1e6))
        out.append(
            f'<line class="tick" x1="{tx:.1f}" y1="{TOP - 12}" x2="{tx:.1f}" y2="{height - 10}" '
            'stroke="#dddddd"/>'
        )
        out.append(
            f'<text x="{tx:.1f}" y="{TOP - 16}" text-anchor="middle">{_seconds(tick)}</text>'
        )
        tick += step
    for legend_i, (name, colour) in enumerate(COLOURS.items()):
        lx = LEFT + LABEL_WIDTH + legend_i * 110
        out.append(f'<rect x="{lx}" y="28" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{lx + 14}" y="37">{name}</text>')

    for i, run in enumerate(runs):
        y = TOP + i * ROW
        job, instance = str(run.get("Job", "")), str(run.get("Instance", ""))
        name = f"{job} ({instance})" if instance else job
        start, end = int(run["Starting"]), _end(run, now)
        kind = _kind(run)
        took = _seconds(max(end - start, 0) / 1e6)
        reason = str(run.get("Reason", ""))
        tip = f"{name}: {kind}, {took} to {'finish' if run.get('Task') else 'ready'}"
        if reason:
            tip += f"; {reason}"
        out.append(
            f'<text x="{LEFT + LABEL_WIDTH - 6}" y="{y + BAR - 2}" text-anchor="end">'
            f"{escape(name)}</text>"
        )
        bar_width = max(x(end) - x(start), 1.0)
        out.append(
            f'<rect class="bar" data-job={quoteattr(job)} data-instance={quoteattr(instance)} '
            f'data-state="{kind}" x="{x(start):.1f}" y="{y}" width="{bar_width:.1f}" '
            f'height="{BAR}" fill="{COLOURS[kind]}"><title>{escape(tip)}</title></rect>'
        )
        out.append(f'<text x="{x(start) + bar_width + 4:.1f}" y="{y + BAR - 2}">{took}</text>')
        for failed_at in run.get("Failures", []):
            fx = x(int(failed_at))
            out.append(
                f'<path class="failure" d="M{fx - 4:.1f},{y - 1} l8,{BAR + 2} m-8,0 l8,-{BAR + 2}" '
                f'stroke="#b71c1c" stroke-width="2"><title>{escape(name)} failed'
                f"{': ' + escape(reason) if reason else ''}</title></path>"
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"
