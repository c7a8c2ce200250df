"""ReloadConfiguration and SIGHUP: new jobs appear, changed ones apply from their next start,
running jobs keep running, and a file broken by an edit keeps its previous definition."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from dbus_fast import Message
from dbus_fast.errors import DBusError

from busmgr.bus.face import job_path

from conftest import TIMEOUT, Session, add_match

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
