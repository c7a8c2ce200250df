"""The supervisor with real processes and no bus: spawn into a job's scope, reap, and what is
fatal for the manager."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from busmgr.job import Job
from busmgr.jobclass import JobClass, ProcessKind, ProcessSpec
from busmgr.joblog import JobLog
from busmgr.observe import Observers
from busmgr.process import cgroup2_mount, clonespawn, spawning
from busmgr.supervisor import Supervisor

TIMEOUT = 10.0


class QuietHost:
    """A job host that does nothing (the supervisor is under test, not the job)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@pytest_asyncio.fixture
async def supervisor(tmp_path: Path) -> AsyncIterator[tuple[Supervisor, list[str]]]:
    fatal: list[str] = []
    sup = Supervisor(
        asyncio.get_running_loop(), lambda: [], JobLog(tmp_path), Observers(), fatal.append
    )
    sup.start(os.environ)
    try:
        yield sup, fatal
    finally:
        await sup.finish(TIMEOUT)


def job(name: str = "svc") -> Job:
    cls = JobClass(name=name, processes={ProcessKind.MAIN: ProcessSpec("sleep 60")})
    return Job(cls, "", {}, QuietHost())  # type: ignore[arg-type]


async def test_a_stranded_manager_is_fatal_and_the_process_still_watched(
    supervisor: tuple[Supervisor, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    sup, fatal = supervisor
    if sup.hierarchy is None or cgroup2_mount() is None:
        pytest.skip("needs a writable cgroup2 hierarchy")
    from busmgr.process.cgroups import cgroup_return, own_cgroup_procs

    home = own_cgroup_procs()

    def refuse(_procs: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(spawning, "cgroup_return", refuse)
    monkeypatch.setattr(clonespawn, "enabled", False)  # the one path where the manager moves
    j = job()
    try:
        pid = sup.spawn(j, ProcessKind.MAIN, {"PATH": os.defpath})
    finally:
        cgroup_return(home)
    assert pid > 0 and len(fatal) == 1 and "cannot leave the job cgroup" in fatal[0]
    exited = asyncio.get_running_loop().create_future()
    j.process_exited = lambda p, status, sig: exited.set_result((p, sig))  # type: ignore[method-assign]
    os.kill(pid, signal.SIGTERM)
    assert await asyncio.wait_for(exited, TIMEOUT) == (pid, signal.SIGTERM)


async def test_process_rows_name_the_main_process_and_others(
    supervisor: tuple[Supervisor, list[str]],
) -> None:
    sup, _ = supervisor
    j = job()
    pid = sup.spawn(j, ProcessKind.MAIN, {"PATH": os.defpath})
    j.pids[ProcessKind.MAIN] = pid
    assert sup.process_rows(j)[0] == ("main", pid)
    assert sup.has_processes(j)
    exited = asyncio.get_running_loop().create_future()
    j.process_exited = lambda p, status, sig: exited.set_result(p)  # type: ignore[method-assign]
    sup.kill(j, signal.SIGTERM)
    assert await asyncio.wait_for(exited, TIMEOUT) == pid


async def test_a_spawned_process_is_recorded_with_its_start_time(
    supervisor: tuple[Supervisor, list[str]],
) -> None:
    # The start time a snapshot records (what names the process for good) is the kernel's,
    # whether it came from the clock around the spawn or from /proc/PID/stat afterwards.
    from busmgr.process import proc_start_time

    sup, _ = supervisor
    jobs = [job(f"svc{n}") for n in range(20)]
    for j in jobs:
        j.pids[ProcessKind.MAIN] = sup.spawn(j, ProcessKind.MAIN, {"PATH": os.defpath})
    for j in jobs:
        pid = j.pids[ProcessKind.MAIN]
        assert sup.saved_processes(j) == {ProcessKind.MAIN: (pid, proc_start_time(pid))}
    exits = []
    for j in jobs:
        fut = asyncio.get_running_loop().create_future()
        j.process_exited = lambda p, status, sig, fut=fut: fut.set_result(p)  # type: ignore[method-assign]
        exits.append(fut)
        sup.kill(j, signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*exits), TIMEOUT)
