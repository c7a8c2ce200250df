"""Checks across jobs: what no single file can tell about itself.

Model: :func:`cross_check` looks at a set of parsed jobs together and reports

1. a WARNING for each event named in a ``start on`` / ``stop on`` that nothing emits: neither
   the manager (:data:`BUILTIN_EVENTS`) nor any job's ``emits`` (whose entries may be globs);
2. an ERROR for each cycle of blocking events. ``starting`` and ``stopping`` block the job
   they are about until the jobs they start or stop have done so; so job A with
   ``start on starting B``, ``start on stopping B``, ``stop on starting B`` or
   ``stop on stopping B`` makes B wait for A. In a cycle of such waits, the right timing
   (one job stopped while another starts, say) leaves every job of it waiting for the next
   one for ever, so every cycle is an error, not only those that deadlock in every order.
   It is reported once, at the stanza that closes it:
   ``a.conf:3: blocking cycle: a waits for b waits for a``, where line 3 of ``a.conf`` is the
   stanza by which b waits for a;
3. a WARNING when two jobs provide the same bus name (activation would pick one);
4. an ERROR when two jobs declare the same ``socket`` (only the first, by name, gets it).

Which jobs a ``starting``/``stopping`` match is about comes from its ``JOB`` argument (the
first positional one, or ``JOB=``): a glob may name several jobs; one with ``$VAR`` cannot be
known before run time and adds no edge; none at all means every job. A job waiting for itself
is no cycle: the manager never makes a job hold the event that blocks it (``start on stopping
J`` in J itself restarts J once its own stopping event is over).

Invariants: pure (no file, no process); the result is in a stable order (by file, then line).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from busmgr.config.diagnostics import Diagnostic, Severity, sort_key
from busmgr.jobclass import EventArg, EventExpr, EventMatch, JobClass, expr_events

BUILTIN_EVENTS: frozenset[str] = frozenset(
    {
        "startup",
        "starting",
        "started",
        "stopping",
        "stopped",
        "dbus-activation",
        "dbus-signal",
        "desktop-start",
        "desktop-phase",
        "desktop-delay",
        "desktop-end",
        # the on-demand bridges (busmgr.triggers)
        "socket",
        "file",
        "timer",
    }
)

# The job events that block the job they are about, and the stanzas through which a job reacts
# to them (and so makes that job wait for it).
_BLOCKING_EVENTS = ("starting", "stopping")
_STANZAS = ("start_on", "stop_on")


@dataclass(frozen=True, slots=True)
class _Edge:
    """``waiter`` waits for ``job`` because of ``job``'s stanza at ``line``."""

    waiter: str
    job: str
    line: int


def _emitted(jobs: list[JobClass]) -> list[str]:
    return [pattern for job in jobs for pattern in job.emits]


def _unemitted_events(jobs: list[JobClass]) -> list[Diagnostic]:
    patterns = _emitted(jobs)
    out: list[Diagnostic] = []
    for job in jobs:
        for stanza, expr, line in (
            ("start on", job.start_on, job.start_on_line),
            ("stop on", job.stop_on, job.stop_on_line),
        ):
            reported: set[str] = set()
            for match in expr_events(expr):
                name = match.name
                if name in BUILTIN_EVENTS or name in reported or "$" in name:
                    continue
                if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                    continue
                reported.add(name)
                out.append(
                    Diagnostic(
                        job.source or job.name,
                        line,
                        f'event "{name}" in "{stanza}" is not emitted by any job '
                        '(no "emits" lists it) nor by busmgr',
                        Severity.WARNING,
                    )
                )
    return out


def _job_pattern(match: EventMatch) -> EventArg | None:
    """The argument that says which job a job event is about, if any."""
    for index, arg in enumerate(match.args):
        if arg.key == "JOB" or (arg.key is None and index == 0):
            return arg
    return None


def _targets(match: EventMatch, names: list[str]) -> list[str]:
    arg = _job_pattern(match)
    if arg is None:
        return list(names)
    if "$" in arg.pattern:
        return []
    return [n for n in names if fnmatch.fnmatchcase(n, arg.pattern) != arg.negate]


def _edges(jobs: list[JobClass]) -> list[_Edge]:
    names = [job.name for job in jobs]
    edges: list[_Edge] = []
    for job in jobs:
        for attr in _STANZAS:
            expr: EventExpr | None = getattr(job, attr)
            line = job.start_on_line if attr == "start_on" else job.stop_on_line
            for match in expr_events(expr):
                if match.name not in _BLOCKING_EVENTS:
                    continue
                edges.extend(
                    _Edge(target, job.name, line)
                    for target in _targets(match, names)
                    if target != job.name
                )
    return edges


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively (job graphs are small, but recursion has limits)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            successors = graph[node]
            if child < len(successors):
                work.append((node, child + 1))
                nxt = successors[child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def _cycle_through(start: str, graph: dict[str, list[str]], members: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside one strongly connected component."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in graph[node]:
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return [start, start]


def _blocking_cycles(jobs: list[JobClass]) -> list[Diagnostic]:
    edges = _edges(jobs)
    graph: dict[str, list[str]] = {job.name: [] for job in jobs}
    where: dict[tuple[str, str], int] = {}
    for edge in edges:
        if edge.job not in graph[edge.waiter]:
            graph[edge.waiter].append(edge.job)
        where.setdefault((edge.waiter, edge.job), edge.line)
    by_name = {job.name: job for job in jobs}
    out: list[Diagnostic] = []
    for component in _strongly_connected(graph):
        if len(component) < 2:
            continue
        start = min(component)
        cycle = _cycle_through(start, graph, set(component))
        # The last step "x waits for start" comes from start's own stanza: report it there.
        line = where[(cycle[-2], start)]
        job = by_name[start]
        text = " waits for ".join(cycle)
        out.append(Diagnostic(job.source or job.name, line, f"blocking cycle: {text}"))
    return out


def _shared_bus_names(jobs: list[JobClass]) -> list[Diagnostic]:
    providers: dict[str, JobClass] = {}
    out: list[Diagnostic] = []
    for job in jobs:
        if job.dbus_name is None:
            continue
        first = providers.setdefault(job.dbus_name, job)
        if first is not job:
            out.append(
                Diagnostic(
                    job.source or job.name,
                    0,
                    f'bus name "{job.dbus_name}" is also provided by job "{first.name}"',
                    Severity.WARNING,
                )
            )
    return out


def _shared_sockets(jobs: list[JobClass]) -> list[Diagnostic]:
    holders: dict[tuple[str, str, str, int], JobClass] = {}
    out: list[Diagnostic] = []
    for job in sorted(jobs, key=lambda j: j.name):
        for spec in job.sockets:
            first = holders.setdefault(spec.key, job)
            if first is not job:
                out.append(
                    Diagnostic(
                        job.source or job.name,
                        spec.line,
                        f'socket {spec} is also declared by job "{first.name}"',
                    )
                )
    return out


def cross_check(jobs: Iterable[JobClass]) -> list[Diagnostic]:
    """Every finding across ``jobs`` (see the module docstring), sorted by file and line."""
    listed = list(jobs)
    found = _unemitted_events(listed) + _blocking_cycles(listed) + _shared_bus_names(listed)
    found += _shared_sockets(listed)
    return sorted(found, key=sort_key)
