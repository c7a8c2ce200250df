"""The bus face holds its signals while a ``dbus`` job is on its way up (issue 13), without a
bus: a stub link records what would be sent.

While an activated service claims its name, its caller waits and the bus daemon must route the
service's ``Hello`` and ``RequestName``: the manager's signals (building them, the daemon
routing them) wait until the job is ready, at most :data:`busmgr.bus.signal_queue.HOLD`
seconds, and then go out in the order things happened. Nothing here sleeps: the tests wait
for the flush itself, under a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from dbus_fast import Message

from busmgr.bus.face import BusFace
from busmgr.bus.signal_queue import HOLD
from busmgr.events import Event
from busmgr.job import Goal, Job, State
from busmgr.jobclass import JobClass, ProcessKind, ProcessSpec

from conftest import until


class Link:
    """What the face needs of a bus link; ``sent`` holds the member of every signal sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def export(self, path: str, interface: Any) -> None:
        pass  # (PropertiesChanged goes through the buses an interface is exported on: none)

    def unexport(self, path: str, interface: Any) -> None:
        pass

    def add_handler(self, handler: Callable[[Message], Any]) -> None:
        pass

    def send(self, msg: Message) -> None:
        self.sent.append(msg.member or "")


class Host:
    """Just enough of a job host for jobs whose state the test sets."""

    def changed(self, job: Job) -> None:
        pass


def face_and_job(dbus_name: str | None) -> tuple[BusFace, Link, Job]:
    link = Link()
    ops = SimpleNamespace(control=SimpleNamespace(shutting_down=False))
    face = BusFace(link, ops, lambda _job: [])  # type: ignore[arg-type]
    cls = JobClass(
        name="svc", dbus_name=dbus_name, processes={ProcessKind.MAIN: ProcessSpec("true")}
    )
    job = Job(cls, "", {}, Host())  # type: ignore[arg-type]
    face.instance_added(job)
    return face, link, job


async def turns(count: int) -> None:
    """Let the loop run ``count`` turns (each a callback scheduled and awaited)."""
    loop = asyncio.get_running_loop()
    for _ in range(count):
        turn: asyncio.Future[None] = loop.create_future()
        loop.call_soon(turn.set_result, None)
        await turn


def move(face: BusFace, job: Job, goal: Goal, state: State) -> None:
    job.goal, job.state = goal, state
    face.job_changed(job)


async def test_signals_wait_while_a_dbus_job_rises_and_go_out_in_order_once_it_is_up() -> None:
    face, link, job = face_and_job("org.example.Svc")
    move(face, job, Goal.START, State.WAITING)
    face.job_event(job, Event.make("starting", {"JOB": "svc", "INSTANCE": ""}))
    move(face, job, Goal.START, State.STARTING)
    move(face, job, Goal.START, State.SPAWNED)
    await turns(5)
    assert link.sent == []  # loop turns passed: nothing went out
    move(face, job, Goal.START, State.POST_START)  # ready: the hold ends at once
    await turns(2)
    assert link.sent[0] == "JobStarting"


async def test_the_hold_ends_by_itself_for_a_job_that_never_gets_up() -> None:
    face, link, job = face_and_job("org.example.Svc")
    move(face, job, Goal.START, State.SPAWNED)
    face.job_event(job, Event.make("starting", {"JOB": "svc", "INSTANCE": ""}))
    await turns(5)
    assert link.sent == []  # held...
    await until(lambda: bool(link.sent), timeout=10 * HOLD)
    assert link.sent[0] == "JobStarting"  # ...and let go while the job still waits
    assert job.state is State.SPAWNED


async def test_a_job_without_a_bus_name_holds_nothing() -> None:
    face, link, job = face_and_job(None)
    move(face, job, Goal.START, State.SPAWNED)
    face.job_event(job, Event.make("starting", {"JOB": "svc", "INSTANCE": ""}))
    await turns(2)  # once per loop turn, as ever
    assert link.sent[0] == "JobStarting"
