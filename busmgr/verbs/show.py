"""``list`` and ``status``: what the manager's jobs are doing, as tables, lines or details.

``list`` is one row per instance (and per skipped autostart entry); ``status`` without JOB is
Upstart's status lines, with JOB each selected instance in detail (:mod:`busmgr.statusview`,
imported only then) with the last lines of its log. Both run over the light transport.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from busmgr.bus.client import ErrorReply, ManagerClient, is_job_path, job_path_for
from busmgr.verbs import EXIT_NOT_RUNNING, EXIT_OK
from busmgr.verbs.output import (
    format_status_line,
    format_table,
    info_json,
    print_json,
    print_line,
    result_cell,
    status_line_with_reason,
)


async def run_list(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    rows = sorted(await client.list_jobs(), key=lambda r: (r.job, r.instance))
    infos = await client.describe(rows)
    # Entries that are not jobs (autostart entries skipped or refused) are listed among the
    # jobs, by the name they would have, with where they are (SOURCE) and why they are not
    # jobs (RESULT).
    skipped = await client.list_skipped()
    if args.json:
        entries = [info_json(i) for i in infos]
        entries += [
            {"job": job, "state": "skipped", "source": source, "reason": reason}
            for job, source, reason in skipped
        ]
        print_json(out, sorted(entries, key=lambda e: (str(e["job"]), str(e.get("instance", "")))))
        return EXIT_OK
    lines: list[tuple[tuple[str, int], list[str]]] = []
    for info in infos:
        row = [
            info.job,
            info.instance or "-",
            f"{info.goal}/{info.state}",
            str(info.main_pid) if info.main_pid else "-",
            info.bus_name or "-",
            info.source or "-",
            "-" if is_job_path(info.path) else result_cell(info),
        ]
        lines.append(((info.job, 0), row))
    for job, source, reason in skipped:
        lines.append(((job, 1), [job, "-", "skipped", "-", "-", source, reason]))
    table = [["JOB", "INSTANCE", "GOAL/STATE", "PID", "BUSNAME", "SOURCE", "RESULT"]]
    table += [row for _key, row in sorted(lines, key=lambda line: line[0])]
    print_line(out, format_table(table, right=frozenset({3})))
    return EXIT_OK


async def _selected_paths(client: ManagerClient, args: argparse.Namespace) -> list[str]:
    """The instance paths ``JOB [INSTANCE | KEY=VALUE...]`` names (raises the error replies
    UnknownJob, UnknownInstance); every instance of JOB without a selector (may be none)."""
    if args.env:
        return [await client.get_instance(args.job, dict(args.env))]
    if args.instance is not None:
        return [await client.get_instance_by_name(args.job, args.instance)]
    rows = [r for r in await client.list_jobs() if r.job == args.job]
    if not rows:
        await client.get_job(args.job)  # the UnknownJob error
    return [r.path for r in rows if not is_job_path(r.path)]


async def run_status(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.job is None:
        rows = sorted(await client.list_jobs(), key=lambda r: (r.job, r.instance))
        infos = await client.describe(rows, sources=False)
        if args.json:
            print_json(out, [info_json(i) for i in infos])
        else:
            for info in infos:
                print_line(out, status_line_with_reason(info))
        return EXIT_OK if any(i.state == "running" for i in infos) else EXIT_NOT_RUNNING
    paths = await _selected_paths(client, args)
    if not paths:
        # An `instance` job with no instance now: that is what not running looks like.
        if args.json:
            print_json(out, [])
        else:
            print_line(out, format_status_line(args.job, "", "stop", "waiting"))
        return EXIT_NOT_RUNNING
    from busmgr import INSTANCE_INTERFACE, JOB_INTERFACE

    targets = [(job_path_for(args.job), JOB_INTERFACE)]
    targets += [(p, INSTANCE_INTERFACE) for p in paths]
    results = await client.get_all_many(targets)
    for result in results:
        if isinstance(result, ErrorReply):
            raise result
    job_props = results[0]
    shown = [r for r in results[1:] if isinstance(r, dict)]
    import time

    from busmgr.statusview import format_status, process_tree, status_json

    now = time.time()
    documents = []
    job = job_props if isinstance(job_props, dict) else {}
    for i, props in enumerate(sorted(shown, key=lambda p: str(p.get("Instance", "")))):
        log_lines = log_tail(str(props.get("LogPath", "")), args.lines)
        if args.json:
            documents.append(status_json(props, job, log_lines))
            continue
        if i:
            print_line(out, "")
        tree = process_tree(props.get("Processes", []))
        for line in format_status(props, job, tree, log_lines, now):
            print_line(out, line)
    if args.json:
        print_json(out, documents)
    running = any(p.get("State") == "running" for p in shown)
    return EXIT_OK if running else EXIT_NOT_RUNNING


def log_tail(path: str, count: int) -> list[str]:
    if not path or count <= 0:
        return []
    from busmgr.logview import last_lines

    return [ln.decode(errors="replace") for ln in last_lines(Path(path), count)]
