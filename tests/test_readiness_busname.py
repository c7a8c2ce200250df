"""``dbus NAME`` readiness without a bus: a fake :class:`NameOwners` answers, a fake host runs
the job. Who owns the name decides; a check that cannot be made never leaves the job waiting
for its ready timeout."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest

from busmgr.events import Event
from busmgr.job import Goal, Job, State
from busmgr.jobclass import JobClass, ProcessKind, ProcessSpec
from busmgr.readiness import BusNameReadiness
from busmgr.scope import ProcessScope

from conftest import until

NAME = "org.test.Name"
TIMEOUT = 5.0


class Host:
    """Just enough of a job host: blocking events finish on the next loop turn."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.watched: list[Job] = []
        self.readiness: BusNameReadiness | None = None

    def spawn(self, job: Job, kind: ProcessKind, env: object) -> int:
        return 4242  # no such process: this test runs none

    def emit_job_event(
        self, job: Job, event: Event, on_finished: Callable[[bool], None] | None
    ) -> None:
        if on_finished is not None:
            self.loop.call_soon(on_finished, False)

    def watch_readiness(self, job: Job) -> None:
        assert self.readiness is not None
        self.readiness.watch(job)

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, callback)

    def now(self) -> float:
        return self.loop.time()

    def __getattr__(self, name: str) -> Any:  # changed, finished, kill...
        return lambda *args: False


class Owners:
    """A fake bus: ``owner`` and ``owner_pid`` as configured."""

    def __init__(self, owner: str = ":1.9", pid: int | None = None) -> None:
        self.current = owner
        self.pid = pid
        self.pid_error: Exception | None = None
        self.owner_error: Exception | None = None

    async def watch(self, name: str) -> str:
        return self.current

    def owner(self, name: str) -> str:
        if self.owner_error is not None:
            raise self.owner_error
        return self.current

    async def owner_pid(self, owner: str) -> int | None:
        if self.pid_error is not None:
            raise self.pid_error
        return self.pid


def started_job(owners: Owners | None) -> tuple[Job, BusNameReadiness]:
    host = Host()
    cls = JobClass(
        name="svc", dbus_name=NAME, processes={ProcessKind.MAIN: ProcessSpec("/bin/svc")}
    )
    job = Job(cls, "", {}, host)  # type: ignore[arg-type]
    readiness = BusNameReadiness(host.loop, lambda: [job], lambda j: ProcessScope("svc"))
    readiness.attach(owners)
    host.readiness = readiness
    job.start()
    return job, readiness


async def test_a_bus_that_cannot_tell_the_owner_pid_counts_the_name_as_the_jobs() -> None:
    # A bug found by the house review: a failed check was only logged, and the job waited for
    # its ready timeout (90 s by default).
    owners = Owners()
    owners.pid_error = ConnectionResetError(104, "Connection reset by peer")
    job, _ = started_job(owners)
    await until(lambda: job.state is State.RUNNING)


async def test_a_check_that_fails_fails_the_start_with_the_reason() -> None:
    owners = Owners(pid=4242)
    owners.owner_error = RuntimeError("the owner table is broken")
    job, _ = started_job(owners)
    await until(lambda: job.goal is Goal.STOP)
    assert job.failure is not None
    assert job.failure.reason == (f"cannot check the owner of {NAME}: the owner table is broken")


async def test_an_owner_that_is_not_the_jobs_process_does_not_make_it_ready() -> None:
    owners = Owners(pid=os.getpid())  # this test's process: no process of the job
    job, readiness = started_job(owners)
    await until(lambda: job.state is State.SPAWNED)
    await until(lambda: not readiness._tasks)
    assert job.state is State.SPAWNED and "dbus" in job.pending_ready
    owners.pid = 4242  # the job's main process takes the name
    readiness.owner_changed(NAME, ":1.10")
    owners.current = ":1.10"
    await until(lambda: job.state is State.RUNNING)


async def test_without_a_bus_there_is_nothing_to_wait_for() -> None:
    job, _ = started_job(None)
    await until(lambda: job.state is State.RUNNING)


@pytest.mark.parametrize("owner", ["", ":1.11"])
async def test_a_running_job_that_loses_its_name_fails(owner: str) -> None:
    owners = Owners(pid=4242)
    job, readiness = started_job(owners)
    await until(lambda: job.state is State.RUNNING)
    owners.current, owners.pid = owner, os.getpid()
    readiness.owner_changed(NAME, owner)
    await until(lambda: job.failure is not None)
    assert job.failure is not None and job.failure.reason == f"lost bus name {NAME}"
