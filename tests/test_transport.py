"""The manager's bus connection survives a full socket send buffer (a burst of signals)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus

from busmgr.bus.transport import _PatientSocket

from conftest import TIMEOUT, add_match, start_session, stop_session


def test_a_send_that_would_block_sends_nothing_instead_of_raising() -> None:
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        patient = _PatientSocket(a)
        sent = 0
        while (n := patient.send(b"x" * 65536)) > 0:
            sent += n
        assert sent > 0 and n == 0  # full: nothing sent, no exception
        with pytest.raises(BlockingIOError):
            a.send(b"x")  # what dbus-fast would have seen
        assert patient.fileno() == a.fileno()
    finally:
        a.close()
        b.close()


@pytest.mark.integration
async def test_one_event_starting_many_jobs_with_a_listener(tmp_path: Path) -> None:
    count = 300
    jobs = {f"t{i:03d}": "start on go\nstop on halt\nexec sleep 1000\n" for i in range(count)}
    sess = await start_session(tmp_path, jobs)
    listener = await MessageBus(bus_address=sess.address).connect()
    try:
        await add_match(listener, "type='signal'")
        await sess.emit("go")
        rows = (await sess.call("ListJobs"))[0]
        assert sum(1 for r in rows if r[2] == "running") == count
        await asyncio.wait_for(sess.emit("halt"), TIMEOUT)
        rows = (await sess.call("ListJobs"))[0]
        assert sum(1 for r in rows if r[2] == "waiting") == count
    finally:
        listener.disconnect()
        await listener.wait_for_disconnect()
        await stop_session(sess)
