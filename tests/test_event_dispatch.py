"""The manager's event dispatch without a bus or processes: jobs here run nothing, so their
whole life cycle is events (issue: events, start on, stop on and the blocking job events)."""

from __future__ import annotations

from pathlib import Path

import pytest

from busmgr.config import parse_event_expr
from busmgr.errors import ManagerError
from busmgr.job import State
from busmgr.jobclass import JobClass
from busmgr.manager import Manager, ManagerConfig
from busmgr.options import Mode


def manager(tmp_path: Path, *classes: JobClass) -> Manager:
    # The manager is the composition root: its operations live in m.control (the house issue).
    m = Manager(
        ManagerConfig(
            mode=Mode.SESSION,
            services_dirs=(),
            state_dir=tmp_path,
            import_services=False,
            environ={"HOME": str(tmp_path)},
        )
    )
    for cls in classes:
        m.registry.add_class(cls)
    return m


def task(name: str, start_on: str, **kwargs: object) -> JobClass:
    return JobClass(name=name, task=True, start_on=parse_event_expr(start_on), **kwargs)  # type: ignore[arg-type]


async def test_emit_with_wait_returns_once_the_task_it_started_has_run(tmp_path: Path) -> None:
    m = manager(tmp_path, task("t", "go"))
    job = m.registry.instance("t", "")
    assert job is not None
    await m.control.emit_event("go", {"X": "1"}, wait=True)
    assert (job.start_count, job.state) == (1, State.WAITING)
    assert job.env["X"] == "1"  # the event's env reached the job


async def test_no_event_starts_a_job_once_shutdown_began(tmp_path: Path) -> None:
    m = manager(tmp_path, task("t", "go"))
    job = m.registry.instance("t", "")
    assert job is not None
    m.control.shutting_down = True
    await m.control.emit_event("go", {}, wait=True)
    assert job.start_count == 0


async def test_instance_that_expands_to_nothing_is_skipped_not_fatal(tmp_path: Path) -> None:
    m = manager(tmp_path, task("i", "go", instance="$TTY"), task("t", "go"))
    await m.control.emit_event("go", {}, wait=True)  # i cannot start; t still does
    assert m.registry.instances["i"] == {}
    job = m.registry.instance("t", "")
    assert job is not None and job.start_count == 1


async def test_emit_rejects_bad_names_and_env(tmp_path: Path) -> None:
    m = manager(tmp_path)
    with pytest.raises(ManagerError) as err:
        await m.control.emit_event("a b", {}, wait=False)
    assert err.value.name == "InvalidArgs"
    with pytest.raises(ManagerError):
        await m.control.emit_event("ok", {"1X": "v"}, wait=False)


async def test_reload_updates_which_jobs_an_event_reaches(tmp_path: Path) -> None:
    m = manager(tmp_path, task("t", "old-event"))
    job = m.registry.instance("t", "")
    assert job is not None
    m.registry.swap({"t": task("t", "new-event")})
    await m.control.emit_event("old-event", {}, wait=True)
    assert job.start_count == 0
    await m.control.emit_event("new-event", {}, wait=True)
    assert job.start_count == 1


async def test_a_running_instance_keeps_the_stop_on_of_its_retired_class(tmp_path: Path) -> None:
    svc = JobClass(name="s", stop_on=parse_event_expr("old-stop"))
    m = manager(tmp_path, svc)
    await m.control.start_job("s", {}, wait=True)  # no processes: running at once
    job = m.registry.instance("s", "")
    assert job is not None and job.state is State.RUNNING
    m.registry.swap({"s": JobClass(name="s")})  # the new definition has no stop on
    assert job.jobclass is svc  # still running with the class it started with
    await m.control.emit_event("old-stop", {}, wait=True)
    assert job.state is State.WAITING
    assert m.registry.instance("s", "") is job and job.jobclass.stop_on is None


async def test_an_exception_while_handling_an_event_stops_the_manager(tmp_path: Path) -> None:
    # A bug found by the house review: an exception in event handling that means a bug (a
    # JobStateError) was logged and ignored; the manager carried on with broken state.
    from busmgr.job import JobStateError

    m = manager(tmp_path, task("t", "go"))

    def broken(event: object, block: object) -> None:
        raise JobStateError("waiting -> killed is not a valid transition")

    m.dispatcher.handle = broken  # type: ignore[method-assign]
    await m.control.emit_event("go", {}, wait=True)  # the event still finishes
    assert m.stopped.done() and m.exit_status == 1
