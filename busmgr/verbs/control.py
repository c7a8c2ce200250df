"""The verbs that ask the manager to act: start, stop, restart, reload, emit, activate,
reexec, reload-configuration, the session's environment, end-session.

Each is one call of the bus API (SPEC §3) that the manager's :mod:`busmgr.control` answers; the
call waits (unless ``--no-wait``) and the verb prints the instance's status line. A ``start``
(or ``restart``) of a ``respawn`` job without a bus name is watched a little longer
(:data:`START_CONFIRM`): the manager's reply comes once the job runs, but one that dies at once
and respawns until its limit has failed to start, and is reported so, with its reason and its
last output.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, TextIO

from busmgr import ERROR_PREFIX
from busmgr.bus.client import ErrorReply, ManagerClient, is_job_path, job_path_for
from busmgr.verbs import EXIT_FAILED, EXIT_OK
from busmgr.verbs.connection import Decided, watch_signals
from busmgr.verbs.output import one_line, print_line, status_line

#: Seconds a started `respawn` job is watched: a failure within it means it failed to start.
START_CONFIRM = 0.5
#: Seconds a start that is failing and respawning is followed to its end at most.
START_FAILING_WAIT = 10.0


class _StartWatch:
    """The signals of one instance after its start: did it fail, respawn, or stop?"""

    def __init__(self, job: str) -> None:
        self.job = job
        self.instance: str | None = None  # known once StartJob replied
        self.failures = 0
        self.stopped_env: dict[str, str] | None = None
        self.restarted = False
        self.early: list[tuple[str, list[Any]]] = []

    def __call__(self, member: str, body: list[Any]) -> None:
        if member == "EventEmitted" or body[0] != self.job:
            return
        if self.instance is None:
            self.early.append((member, body))
            return
        if body[1] != self.instance:
            return
        env = dict(body[2])
        if member == "JobStopping" and env.get("RESULT") == "failed":
            self.failures += 1
            raise Decided
        if member == "JobStopped":
            self.stopped_env = env
            raise Decided
        if member == "JobStarted" and self.failures:
            self.restarted = True
            raise Decided

    def replay(self, instance: str) -> None:
        self.instance = instance
        for member, body in self.early:
            with contextlib.suppress(Decided):
                self(member, body)


async def _confirm_start(client: ManagerClient, watch: _StartWatch, path: str) -> str | None:
    """Watch a started ``respawn`` job for :data:`START_CONFIRM` seconds, and while it fails
    and respawns, until it is up again or has stopped for good. None if it stayed up; else why
    the start failed."""
    import time

    info = await client.describe_path(path)
    watch.replay(info.instance)  # the signals that came before the reply named the instance
    deadline = time.monotonic() + START_CONFIRM
    while watch.stopped_env is None:
        if watch.failures and not watch.restarted:
            if not await watch_signals(client, START_FAILING_WAIT):
                break  # still failing and respawning
            continue
        if watch.restarted:  # up again after a failure: watch it afresh
            watch.restarted, watch.failures = False, 0
            deadline = time.monotonic() + START_CONFIRM
        left = deadline - time.monotonic()
        if left <= 0 or not await watch_signals(client, left):
            return None
    label = f"{info.job} ({info.instance})" if info.instance else info.job
    try:
        props = await client.get_all(path, "org.busmgr.Instance1")
    except ErrorReply:
        props = {}  # an instance of an `instance` job is gone once stopped
    env = watch.stopped_env or {}
    if props.get("ResultReason"):
        reason = str(props["ResultReason"])
    else:
        what = env.get("PROCESS", "main")
        how = (
            f" killed by signal {env['EXIT_SIGNAL']}"
            if env.get("EXIT_SIGNAL")
            else (f" exited with status {env['EXIT_STATUS']}" if env.get("EXIT_STATUS") else "")
        )
        reason = f"respawned too fast, last: main{how}" if what == "respawn" else f"{what}{how}"
    text = f"job {label} failed: {reason}"
    if watch.stopped_env is None:
        text = f"job {label} keeps failing and respawning: {reason}"
    from busmgr.verbs.show import log_tail

    tail = log_tail(str(props.get("LogPath", "")), 3)
    return text + ("; last output: " + " | ".join(tail) if tail else "")


async def _start_like(
    client: ManagerClient, args: argparse.Namespace, out: TextIO, member: str
) -> int:
    watch: _StartWatch | None = None
    if not args.no_wait:
        try:
            job = await client.get_all(job_path_for(args.job), "org.busmgr.Job1")
        except ErrorReply:
            job = {}  # no such job: StartJob says so properly
        if job.get("Respawn") and not job.get("BusName"):
            watch = _StartWatch(args.job)
            await client.subscribe(watch)
    start = client.start_job if member == "StartJob" else client.restart_job
    path = await start(args.job, dict(args.env), wait=not args.no_wait)
    if watch is not None:
        problem = await _confirm_start(client, watch, path)
        if problem is not None:
            raise ErrorReply(ERROR_PREFIX + "JobFailed", problem)
    print_line(out, status_line(await client.describe_path(path)))
    return EXIT_OK


async def run_start(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    return await _start_like(client, args, out, "StartJob")


async def run_restart(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    return await _start_like(client, args, out, "RestartJob")


async def run_stop(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    await client.stop_job(args.job, dict(args.env), wait=not args.no_wait)
    # StopJob names no instance. A job without `instance` keeps its one instance, so show it; a
    # stopped instance of an `instance` job is gone and there is nothing to show.
    rows = [
        r
        for r in await client.list_jobs()
        if r.job == args.job and r.instance == "" and not is_job_path(r.path)
    ]
    for info in await client.describe(rows, sources=False):
        print_line(out, status_line(info))
    return EXIT_OK


async def run_reload(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    await client.reload_job(args.job, dict(args.env))
    return EXIT_OK


async def run_reexec(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    await client.reexec()
    return EXIT_OK


async def run_reload_configuration(
    client: ManagerClient, args: argparse.Namespace, out: TextIO
) -> int:
    await client.reload_configuration()
    errors = (await client.manager_properties()).get("ConfigurationErrors", [])
    for line in errors:
        print(one_line(str(line)), file=sys.stderr, flush=True)
    return EXIT_FAILED if errors else EXIT_OK


async def run_emit(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    await client.emit_event(args.event, dict(args.env), wait=not args.no_wait)
    return EXIT_OK


async def run_activate(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    path = await client.activate_name(args.bus_name)
    print_line(out, status_line(await client.describe_path(path)))
    return EXIT_OK


async def run_setenv(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    for key, value in args.assignments:
        await client.set_env(key, value)
    return EXIT_OK


async def run_unsetenv(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    for key in args.keys:
        await client.unset_env(key)
    return EXIT_OK


async def run_getenv(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.key is not None:
        print_line(out, await client.get_env(args.key))
        return EXIT_OK
    env = await client.list_env()
    for key in sorted(env):
        print_line(out, f"{key}={env[key]}")
    return EXIT_OK


async def run_end_session(client: ManagerClient, args: argparse.Namespace, out: TextIO) -> int:
    await client.end_session(wait=not args.no_wait)
    return EXIT_OK
