"""ReloadConfiguration and SIGHUP: new jobs appear, changed ones apply from their next start,
running jobs keep running, and a file broken by an edit keeps its previous definition."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from dbus_fast import Message
from dbus_fast.errors import DBusError

from busmgr.bus.values import job_path

from conftest import TIMEOUT, Session, add_match, start_session, stop_session

pytestmark = pytest.mark.integration

JOBS = {
    "keeper": """
        description "version one"
        exec sleep 1000
    """,
    "fragile": """
        description "good"
        exec sleep 1000
    """,
    "goner": """
        exec sleep 1000
    """,
}


async def description(session: Session, job: str) -> str:
    path = (await session.call("GetJob", "s", [job]))[0]
    return (await session.props(path, "org.busmgr.Job1"))["Description"]


async def test_reload_keeps_running_jobs_and_applies_changes(session: Session) -> None:
    path = await session.start("keeper")
    pid = (await session.props(path))["MainPID"]
    session.write_job("keeper", 'description "version two"\nexec sleep 1001\n')
    session.write_job("fresh", "task\nexec true\n")
    session.write_job("fragile", 'description "good"\nexec sleep 1000\nrespwan\n')
    (session.services / "goner.conf").unlink()
    await session.call("ReloadConfiguration")

    props = await session.props(path)
    assert (props["State"], props["MainPID"]) == ("running", pid)  # untouched
    assert await description(session, "keeper") == "version two"
    await session.start("fresh")  # the new job exists
    assert await description(session, "fragile") == "good"  # the broken edit was refused
    with pytest.raises(DBusError) as err:
        await session.start("goner")
    assert err.value.type == "org.busmgr.Error.UnknownJob"

    # The changed job runs its new command from its next start on (as in Upstart, a restart
    # keeps the definition the instance started with; a stop and a start take the new one).
    await session.stop("keeper")
    await session.start("keeper")
    new_pid = (await session.props(path))["MainPID"]
    cmdline = Path(f"/proc/{new_pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[:2] == [b"sleep", b"1001"]
    await session.stop("keeper")


async def test_sighup_reloads(session: Session) -> None:
    path = job_path("hupped")
    added = asyncio.get_running_loop().create_future()

    def on_message(msg: Message) -> None:
        if msg.member == "InterfacesAdded" and msg.body and msg.body[0] == path:
            added.done() or added.set_result(None)

    session.bus.add_message_handler(on_message)
    await add_match(session.bus, "type='signal',member='InterfacesAdded'")
    try:
        session.write_job("hupped", "task\nexec true\n")
        session.proc.send_signal(signal.SIGHUP)
        await asyncio.wait_for(added, TIMEOUT)  # the job object appeared: reloaded
        await session.start("hupped")
    finally:
        session.bus.remove_message_handler(on_message)


async def test_a_deleted_running_job_stays_controllable_and_a_recreated_file_takes_it_over(
    session: Session,
) -> None:
    # Found by the reliability review: deleting a running job's file and creating it again
    # made the reload fail ("interface already exported"), `start` spawned a second process
    # and SIGTERM never finished.
    session.write_job("phoenix", "exec sleep 1000\n")
    await session.call("ReloadConfiguration")
    path = await session.start("phoenix")
    pid = (await session.props(path))["MainPID"]

    (session.services / "phoenix.conf").unlink()
    await session.call("ReloadConfiguration")
    (rows,) = await session.call("ListJobs")
    assert [list(r) for r in rows if r[0] == "phoenix"] == [["phoenix", "", "running", path]]
    assert (await session.props(path))["MainPID"] == pid  # still listed, still the same process

    session.write_job("phoenix", 'description "back"\nexec sleep 1000\n')
    await session.call("ReloadConfiguration")
    assert await description(session, "phoenix") == "back"
    with pytest.raises(DBusError) as err:
        await session.start("phoenix")
    assert err.value.type == "org.busmgr.Error.AlreadyStarted"  # never a second copy
    (rows,) = await session.call("ListJobs")
    assert [list(r) for r in rows if r[0] == "phoenix"] == [["phoenix", "", "running", path]]
    assert (await session.props(path))["MainPID"] == pid
    await session.stop("phoenix")
    assert (await session.props(path))["State"] == "waiting"


async def test_a_deleted_running_job_can_be_stopped_and_then_goes_away(session: Session) -> None:
    session.write_job("mayfly", "exec sleep 1000\n")
    await session.call("ReloadConfiguration")
    path = await session.start("mayfly")
    (session.services / "mayfly.conf").unlink()
    await session.call("ReloadConfiguration")
    assert (await session.props(path))["State"] == "running"
    await session.stop("mayfly")  # controllable although its file is gone
    (rows,) = await session.call("ListJobs")
    assert [r for r in rows if r[0] == "mayfly"] == []
    with pytest.raises(DBusError) as err:
        await session.stop("mayfly")
    assert err.value.type == "org.busmgr.Error.UnknownJob"


async def test_reloads_during_a_burst_lose_nothing(tmp_path: Path) -> None:
    count = 200
    jobs = {f"b{i:03d}": "start on go\nexec sleep 1000\n" for i in range(count)}
    sess = await start_session(tmp_path, jobs)
    try:
        mark = sess.signals.mark()
        go = asyncio.ensure_future(sess.emit("go", wait=True))
        for _ in range(3):  # reloads by the bus and by SIGHUP while the jobs start
            sess.proc.send_signal(signal.SIGHUP)
            await sess.call("ReloadConfiguration")
        await asyncio.wait_for(go, 60)
        started = {b[0] for m, b in sess.signals.items[mark:] if m == "JobStarted"}
        assert started == set(jobs)
        (rows,) = await sess.call("ListJobs")
        assert sorted(r[0] for r in rows if r[2] == "running") == sorted(jobs)
        sleepers = [p for p in sess.descendants() if p.name() == "sleep"]
        assert len(sleepers) == count  # one process each: nothing started twice
    finally:
        await stop_session(sess)  # and SIGTERM stops them all, exit 0
