"""The manager's bus connection survives a full socket send buffer (a burst of signals)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus

from busmgr.bus.transport import _CorkedSocket

from conftest import TIMEOUT, add_match, start_session, stop_session


async def test_corked_sends_go_out_in_order_through_a_full_buffer() -> None:
    """Every send is taken at once (dbus-fast never sees EAGAIN), written on a later loop
    turn, in order, however full the socket's buffer gets; the reader gets every byte."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.setblocking(False)
        corked = _CorkedSocket(a, loop)
        chunks = [bytes([i]) * 65536 for i in range(64)]  # 4 MiB: far more than a buffer holds
        assert [corked.send(c) for c in chunks] == [len(c) for c in chunks]
        assert corked.pending() == sum(map(len, chunks))  # nothing written inside the turn
        assert corked.sendmsg([b"x"]) == 0  # with bytes pending, nothing may overtake them
        want = b"".join(chunks)
        got = bytearray()
        while len(got) < len(want):
            got += await asyncio.wait_for(loop.sock_recv(b, 1 << 20), TIMEOUT)
        assert bytes(got) == want
        assert corked.pending() == 0
        assert corked.fileno() == a.fileno()
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
