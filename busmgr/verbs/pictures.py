"""``graph`` and ``plot``: the jobs and their start-up as pictures.

``graph`` draws the jobs and the events that tie them (:mod:`busmgr.graph`), from the running
manager's job properties or, offline, from job files parsed with the manager's own parser
(:mod:`busmgr.config`); ``plot`` draws the manager's start-up timeline (:mod:`busmgr.plot`).
Each is imported only by the verb that needs it. Output goes to stdout, or to ``-o FILE``,
rendered by Graphviz's ``dot`` for a graph whose suffix asks for it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from busmgr.bus.client import ErrorReply, ManagerClient, job_path_for
from busmgr.verbs import EXIT_FAILED, EXIT_OK, PROG
from busmgr.verbs.output import one_line


async def _graph_jobs_from_manager(client: ManagerClient) -> list[Any]:
    from busmgr.config import ExprError, parse_event_expr
    from busmgr.graph import GraphJob

    rows = await client.list_jobs()
    names = sorted({r.job for r in rows})
    results = await client.get_all_many([(job_path_for(n), "org.busmgr.Job1") for n in names])
    jobs = []
    for name, props in zip(names, results, strict=True):
        if isinstance(props, ErrorReply):
            continue
        exprs = []
        for key in ("StartOn", "StopOn"):
            text = str(props.get(key, ""))
            try:
                exprs.append(parse_event_expr(text) if text else None)
            except ExprError:
                exprs.append(None)
        jobs.append(
            GraphJob(
                name,
                exprs[0],
                exprs[1],
                tuple(props.get("Emits", [])),
                str(props.get("BusName", "")),
                bool(props.get("Task", False)),
                str(props.get("InstanceTemplate", "")),
            )
        )
    return jobs


def _graph_jobs_from_files(paths: Sequence[str]) -> tuple[list[Any], list[str]]:
    from busmgr.config import load_directories, parse_job_file
    from busmgr.graph import GraphJob

    jobs, problems = [], []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            result = load_directories([path])
            jobs += [GraphJob.of(c) for c in result.jobs.values()]
            problems += [str(d) for d in result.diagnostics if d.is_error]
        else:
            parsed = parse_job_file(path)
            problems += [str(d) for d in parsed.diagnostics if d.is_error]
            if parsed.job is not None:
                jobs.append(GraphJob.of(parsed.job))
    return jobs, problems


def _write_output(args: argparse.Namespace, out: TextIO, text: str, kind: str) -> int:
    """``text`` to stdout, or to ``-o FILE`` (rendered by Graphviz for a graph, by suffix)."""
    target: Path | None = args.output
    if target is None:
        out.write(text)
        out.flush()
        return EXIT_OK
    suffix = target.suffix.lower().lstrip(".")
    if kind == "plot" or suffix in ("dot", "gv", ""):
        target.write_text(text)
        return EXIT_OK
    import shutil
    import subprocess

    dot = shutil.which("dot")
    if dot is None:
        print(
            f"{PROG}: {args.verb}: Graphviz's `dot` is not installed; "
            f"write DOT with -o FILE.dot or to stdout",
            file=sys.stderr,
        )
        return EXIT_FAILED
    done = subprocess.run(
        [dot, f"-T{suffix}", "-o", str(target)], input=text.encode(), capture_output=True
    )
    if done.returncode != 0:
        print(f"{PROG}: {args.verb}: dot: {one_line(done.stderr.decode())}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def run_graph(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    from busmgr.graph import to_dot

    jobs = await _graph_jobs_from_manager(client)
    return _write_output(args, out, to_dot(jobs), "graph")


def run_graph_offline(args: argparse.Namespace) -> int:
    from busmgr.graph import to_dot

    jobs, problems = _graph_jobs_from_files(args.paths)
    for line in problems:
        print(line, file=sys.stderr)
    return _write_output(args, sys.stdout, to_dot(jobs), "graph") or (
        EXIT_FAILED if problems and not jobs else EXIT_OK
    )


async def run_plot(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    import time

    from busmgr.plot import to_svg

    startup, runs = await client.get_timeline()
    return _write_output(args, out, to_svg(startup, runs, int(time.time() * 1e6)), "plot")
