"""Jobs and the events that tie them, as a Graphviz DOT graph: pure functions.

As Upstart's ``initctl2dot``: a box per job, an ellipse per event that is not a job event, and
edges for every leaf of every expression (the ``and``/``or`` logic is not drawn, the ties are):

* ``start on EVENT`` -- event -> job, green; ``stop on EVENT`` -- event -> job, red, dashed;
* a job event naming a job (``start on started dbus``, ``stopped JOB=x``) -- an edge straight
  from that job, labelled with the event (``started``); a job event naming no single job
  (``started JOB=*``) is an event node;
* ``emits EVENT`` -- job -> event, dotted; ``dbus NAME`` -- a bus-name node (a hexagon) ->
  job, labelled ``activates``.

Operands other than the job name label the edge (``DISPLAY=:*``). The output is
deterministic (sorted), so it diffs well.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from busmgr.jobclass import EventExpr, EventMatch, JobClass, expr_events

__all__ = ["GraphJob", "to_dot"]

JOB_EVENTS = frozenset({"starting", "started", "stopping", "stopped"})
_GLOB = frozenset("*?[$")


@dataclass(frozen=True)
class GraphJob:
    """What the graph needs of one job."""

    name: str
    start_on: EventExpr | None = None
    stop_on: EventExpr | None = None
    emits: tuple[str, ...] = ()
    bus_name: str = ""
    task: bool = False
    instance: str = ""

    @classmethod
    def of(cls, job: JobClass) -> GraphJob:
        return cls(
            job.name,
            job.start_on,
            job.stop_on,
            job.emits,
            job.dbus_name or "",
            job.task,
            job.instance,
        )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _job_named(leaf: EventMatch, jobs: set[str]) -> tuple[str | None, list[str]]:
    """For a job event: the one job it names (if it is a known job, without globs) and the
    other operands, as text."""
    target: str | None = None
    rest = []
    positional = 0
    for arg in leaf.args:
        is_job = (arg.key is None and positional == 0) or (arg.key == "JOB" and not arg.negate)
        if arg.key is None:
            positional += 1
        if is_job and target is None and not (set(arg.pattern) & _GLOB):
            target = arg.pattern
        else:
            rest.append(str(arg))
    if target is not None and target not in jobs:
        return None, [str(a) for a in leaf.args]
    return target, rest


def to_dot(jobs: Iterable[GraphJob], title: str = "busmgr") -> str:
    """The DOT text of ``jobs``; see the module docstring."""
    jobs = sorted(jobs, key=lambda j: j.name)
    names = {j.name for j in jobs}
    nodes: dict[str, str] = {}
    edges: set[tuple[str, str, str]] = set()

    def job_node(name: str) -> str:
        return "job:" + name

    def event_node(label: str) -> str:
        node = "event:" + label
        nodes.setdefault(node, f"{_quote(node)} [shape=ellipse, label={_quote(label)}];")
        return node

    for job in jobs:
        detail = "task" if job.task else ""
        if job.instance:
            detail = f"{detail}, instance {job.instance}".lstrip(", ")
        label = f"{job.name}\n({detail})" if detail else job.name
        colour = "lightyellow" if job.task else "lightblue"
        node = job_node(job.name)
        nodes[node] = (
            f"{_quote(node)} [shape=box, style=filled, fillcolor={colour}, label={_quote(label)}];"
        )

    for job in jobs:
        target = job_node(job.name)
        for expr, style in ((job.start_on, "start"), (job.stop_on, "stop")):
            for leaf in expr_events(expr):
                attrs = "color=darkgreen" if style == "start" else "color=red, style=dashed"
                source_job, rest = (
                    _job_named(leaf, names) if leaf.name in JOB_EVENTS else (None, [])
                )
                if source_job is not None:
                    label = " ".join([leaf.name, *rest])
                    edges.add((job_node(source_job), target, f"{attrs}, label={_quote(label)}"))
                else:
                    source = event_node(str(leaf) if leaf.name in JOB_EVENTS else leaf.name)
                    args = "" if leaf.name in JOB_EVENTS else " ".join(map(str, leaf.args))
                    label = f", label={_quote(args)}" if args else ""
                    edges.add((source, target, attrs + label))
        for event in job.emits:
            edges.add((target, event_node(event), "style=dotted"))
        if job.bus_name:
            bus_node = "bus:" + job.bus_name
            nodes[bus_node] = f"{_quote(bus_node)} [shape=hexagon, label={_quote(job.bus_name)}];"
            edges.add((bus_node, target, 'color=gray40, label="activates"'))

    lines = [
        f"digraph {_quote(title)} {{",
        "  rankdir=LR;",
        '  node [fontname="sans-serif"];',
        '  edge [fontname="sans-serif", fontsize=10];',
    ]
    lines += [f"  {text}" for _node, text in sorted(nodes.items())]
    lines += [f"  {_quote(a)} -> {_quote(b)} [{attrs}];" for a, b, attrs in sorted(edges)]
    lines.append("}")
    return "\n".join(lines) + "\n"
