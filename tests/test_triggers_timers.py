"""Timers in a real ``busmgr session``: jobs started on schedule (monotonic ``EVERY`` and a
wall-clock calendar), and a manager that does not wake up between due times.

Wake-ups are counted from outside, by the manager's voluntary context switches
(``/proc/PID/status``): each time its loop sleeps in ``epoll_wait`` and is woken, that count
goes up by one. Between two due times of a timer that starts nothing, nothing else happens in
the session, so only the timer's own wake-up may be counted (measured: exactly one per due
time); a loop that polled ten times a second would count six or more per 0.6 s.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import busmgr.bus.face  # noqa: F401  (Session.instance imports it: not while the loop is timed)

from conftest import Session, start_session, stop_session

EVERY = 0.3

JOBS = {
    "tick": f"""\
        task
        start on timer EVERY={EVERY}s
        exec true
        """,
    "calendar": """\
        task
        start on timer ON="*:*:*"
        exec true
        """,
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Session]:
    sess = await start_session(tmp_path_factory.mktemp("timers"), JOBS)
    try:
        yield sess
    finally:
        await stop_session(sess)


async def arrivals(session: Session, predicate: Any, count: int, clock: Any = None) -> list[float]:
    """The times (``clock()``, by default the loop's) at which the next ``count`` signals that
    satisfy ``predicate`` arrived."""
    clock = clock or asyncio.get_running_loop().time
    times: list[float] = []
    index = session.signals.mark()
    while len(times) < count:
        await session.signals.wait_for(predicate, start=index)
        times.append(clock())
        index = next(
            i + 1
            for i in range(len(session.signals.items) - 1, index - 1, -1)
            if predicate(*session.signals.items[i])
        )
    return times


def starting(job: str) -> Any:
    return lambda m, b: m == "JobStarting" and b[0] == job


async def test_jobs_started_on_schedule(session: Session) -> None:
    ticks, seconds = await asyncio.gather(
        arrivals(session, starting("tick"), 5),
        arrivals(session, starting("calendar"), 2, clock=time.time),
    )
    # EVERY: each start within 0.2 s of the grid the first one set (lateness does not add up)
    late = [round(t - ticks[0] - k * EVERY, 3) for k, t in enumerate(ticks)]
    assert all(abs(x) < 0.2 for x in late), late
    # ON="*:*:*": due at every whole second of the wall clock
    assert all(t % 1 < 0.3 for t in seconds), [t % 1 for t in seconds]
    assert 0.7 < seconds[1] - seconds[0] < 1.3


def switches(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc/PID/status")


async def test_no_wake_ups_between_due_times(session: Session) -> None:
    pid = session.proc.pid
    assert len(list(Path(f"/proc/{pid}/task").iterdir())) == 1  # one thread: the loop
    for name in JOBS:
        (session.services / f"{name}.conf").unlink()
    # a timer that starts nothing (the other half of its expression never happens)
    session.write_job("idle", "start on timer EVERY=600ms and never-emitted\nexec true\n")
    await session.call("ReloadConfiguration")
    due = "timer EVERY=600ms"

    def fired(m: str, b: list[Any]) -> bool:
        return m == "EventEmitted" and f"{b[0]} EVERY={b[1].get('EVERY')}" == due

    counts: list[int] = []
    index = session.signals.mark()
    for _ in range(3):
        await session.signals.wait_for(fired, start=index)
        counts.append(switches(pid))
        index = session.signals.mark()
    woken = [b - a for a, b in itertools.pairwise(counts)]
    # 0.6 s apart: the timer's own wake-up (measured: exactly 1; the reload just before may
    # still owe a state write), nothing in between (a loop polling ten times a second would
    # count 6 or more)
    assert all(w <= 3 for w in woken), woken
