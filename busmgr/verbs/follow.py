"""``events`` and ``log``: the verbs that print what happens, and with ``--follow`` keep at it.

``events`` prints every instance's state, then (``--follow``) each event as the manager's
signals report it, subscribed before the states are read so that none is missed; it waits out
a re-exec (:data:`MANAGER_GONE_GRACE`). ``log`` reads an instance's log files where the manager
writes them, with :mod:`busmgr.logview` (imported only then), and follows them across
rotations. Both end quietly when their reader goes away.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from busmgr import ERROR_PREFIX, MANAGER_BUS_NAME
from busmgr.bus.client import ErrorReply, ManagerClient
from busmgr.verbs import EXIT_FAILED, EXIT_OK, PROG
from busmgr.verbs.connection import Decided, ManagerGone, pipe_fd, watch_signals
from busmgr.verbs.output import (
    EventPrinter,
    describe_action,
    format_snapshot,
    print_json,
    print_line,
)

#: Seconds the manager may be away before `events --follow` gives up (a re-exec is back sooner).
MANAGER_GONE_GRACE = 2.0


_NO_MANAGER_ERRORS = frozenset(
    {"org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"}
)


async def run_events(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    show = EventPrinter(lambda line: print_line(out, line), json=args.json)
    # Signals that arrive while the states are read are held back and printed after them.
    held: list[tuple[str, list[Any]]] = []
    holding = True
    import time

    gone_since: list[float | None] = [None]

    def on_signal(member: str, body: list[Any]) -> None:
        if holding:
            held.append((member, body))
        else:
            show(member, body)

    def on_owner(owner: str) -> None:
        gone_since[0] = None if owner else time.monotonic()
        raise Decided  # wakes the loop below, which looks at the time

    if args.follow:
        await client.subscribe(on_signal, on_owner)
    try:
        rows = sorted(await client.list_jobs(), key=lambda r: (r.job, r.instance))
        for info in await client.describe(rows, sources=False):
            if args.json:
                print_json(
                    out,
                    {
                        "type": "state",
                        "job": info.job,
                        "instance": info.instance,
                        "goal": info.goal,
                        "state": info.state,
                        "pid": info.main_pid,
                    },
                )
            else:
                print_line(out, format_snapshot(info))
    except ErrorReply as e:
        if not args.follow or e.type not in _NO_MANAGER_ERRORS:
            raise
        # Following before the manager runs is fine: its events will come once it does.
        print(
            f"{PROG}: {describe_action(args)}: {MANAGER_BUS_NAME} is not running; "
            "following its events from when it starts",
            file=sys.stderr,
            flush=True,
        )
    if not args.follow:
        return EXIT_OK
    for member, body in held:
        show(member, body)
    holding = False
    # Until interrupted, the reader goes away (BrokenPipeError), the bus goes away (EOFError),
    # or the manager leaves it for longer than a re-exec takes (ManagerGone).
    while True:
        since = gone_since[0]
        left = None if since is None else since + MANAGER_GONE_GRACE - time.monotonic()
        if left is not None and left <= 0:
            raise ManagerGone(f"{MANAGER_BUS_NAME} left the bus")
        await watch_signals(client, left, pipe_fd(out))


async def run_log(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    from busmgr.logsink import log_name

    await client.get_job(args.job)  # UnknownJob
    instance = args.instance or ""
    if args.env:
        path = await client.get_instance(args.job, dict(args.env))
        instance = str((await client.get_all(path, "org.busmgr.Instance1")).get("Instance", ""))
    directory = str((await client.manager_properties()).get("LogDirectory", ""))
    if not directory:
        raise ErrorReply(ERROR_PREFIX + "UnknownJob", "the manager keeps no job logs")
    path_ = Path(directory) / log_name(args.job, instance)
    from busmgr.logview import follow, last_lines, log_files

    if not log_files(path_) and not args.follow:
        print(f"{PROG}: {describe_action(args)}: no output logged yet ({path_})", file=sys.stderr)
        return EXIT_FAILED
    unreadable = [f for f in log_files(path_) if not os.access(f, os.R_OK)]
    if unreadable:
        print(f"{PROG}: {describe_action(args)}: cannot read {unreadable[0]}", file=sys.stderr)
        return EXIT_FAILED
    binary = out.buffer if hasattr(out, "buffer") else None

    def write(data: bytes) -> None:
        if binary is not None:
            out.flush()
            binary.write(data)
            binary.flush()
        else:
            out.write(data.decode(errors="replace"))
            out.flush()

    lines = last_lines(path_, args.lines)
    if lines:
        write(b"\n".join(lines) + b"\n")
    if args.follow:
        if not path_.parent.is_dir():
            where = path_.parent
            print(f"{PROG}: {describe_action(args)}: no log directory {where}", file=sys.stderr)
            return EXIT_FAILED

        def ready() -> None:
            if not log_files(path_):
                print(
                    f"{PROG}: {describe_action(args)}: no output yet; waiting for it",
                    file=sys.stderr,
                    flush=True,
                )

        follow(path_, write, hangup_fd=pipe_fd(out), on_ready=ready)
    return EXIT_OK
