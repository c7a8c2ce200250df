"""Socket activation against a real ``busmgr session``: busmgr holds the sockets, a connection
starts the job, and the job gets the sockets by the ``LISTEN_FDS`` protocol.

The echo server (``helpers/socket_echo.py``) exits unless ``LISTEN_PID`` is its own pid and
answers each line with its pid, ``LISTEN_FDNAMES`` and its open descriptors. A real Debian
daemon, ``systemd-socket-proxyd`` (package ``systemd``, installed by ``.ci/system-deps``), which
only runs socket-activated and checks ``LISTEN_PID`` itself, proxies to it.

The restart test holds the job's ``pre-start`` on a FIFO the test opens, so the connection is
made at a moment when the old process is dead and the new one does not exist yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import pytest_asyncio
from dbus_fast.errors import DBusError

import busmgr.bus.face  # noqa: F401  (Session.instance imports it: not while the loop is timed)

from conftest import TIMEOUT, Session, start_session, stop_session

PROXYD = shutil.which("systemd-socket-proxyd", path="/lib/systemd:/usr/lib/systemd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    session: Session
    tmp: Path
    port: int
    busy: socket.socket  # holds the port job "busy" wants

    @property
    def busy_port(self) -> int:
        return int(self.busy.getsockname()[1])

    def stderr(self) -> str:
        return self.session.stderr.read_text(errors="replace")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    assert PROXYD is not None, "systemd-socket-proxyd is missing (.ci/system-deps installs it)"
    tmp = tmp_path_factory.mktemp("sockets")
    os.mkfifo(tmp / "gate")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = free_port()
    echo = "exec $PYTHON $TESTS_HELPERS/socket_echo.py\n"
    jobs = {
        "echo": f"""\
            socket unix {tmp}/echo.sock 0600
            socket tcp 127.0.0.1:{port}
            pre-start script
                if [ -e {tmp}/hold ]; then read line < {tmp}/gate; fi
            end script
            {echo}""",
        "proxy": f"socket unix {tmp}/proxy.sock\nexec {PROXYD} {tmp}/echo.sock\n",
        "busy": f"socket tcp 127.0.0.1:{busy.getsockname()[1]}\n{echo}",
        "nodir": f"socket unix {tmp}/missing/x.sock\n{echo}",
        "broken": f"socket unix {tmp}/broken.sock\nexec {tmp}/no-such-daemon\n",
    }
    session = await start_session(tmp, jobs)
    try:
        yield World(session, tmp, port, busy)
    finally:
        busy.close()
        await stop_session(session)


async def connect(where: Path | int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if isinstance(where, Path):
        return await asyncio.wait_for(asyncio.open_unix_connection(str(where)), TIMEOUT)
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", where), TIMEOUT)


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[str]:
    """The server's reply fields: pid, LISTEN_FDNAMES, its descriptors, the line sent."""
    try:
        return (await asyncio.wait_for(reader.readline(), TIMEOUT)).decode().split()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def ask(where: Path | int, line: str) -> list[str]:
    reader, writer = await connect(where)
    writer.write(line.encode() + b"\n")
    await writer.drain()
    return await answer(reader, writer)


async def count_signals(session: Session, member: str, job: str, start: int, count: int) -> None:
    """Wait until ``count`` signals ``member`` of ``job`` arrived from index ``start`` on."""
    seen, index = 0, start
    while seen < count:
        await session.signals.wait_for(lambda _m, _b: True, start=index)
        for item_member, body in session.signals.items[index:]:
            seen += item_member == member and body[0] == job
        index = len(session.signals.items)


async def state(session: Session, job: str) -> tuple[str, int]:
    props = await session.instance(job)
    return props["State"], props["MainPID"]


async def test_sockets_are_held_before_any_job_runs(world: World) -> None:
    path = world.tmp / "echo.sock"
    st = path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE((world.tmp / "proxy.sock").stat().st_mode) == 0o666
    assert await state(world.session, "echo") == ("waiting", 0)
    assert await state(world.session, "proxy") == ("waiting", 0)


async def test_a_connection_made_before_the_start_is_served(world: World) -> None:
    session = world.session
    mark = session.signals.mark()
    reader, writer = await connect(world.tmp / "echo.sock")  # nothing runs yet
    writer.write(b"first\n")
    await writer.drain()
    pid, names, fds, line = await answer(reader, writer)
    assert (names, fds, line) == ("echo:echo", "0,1,2,3,4", "first")
    assert await state(session, "echo") == ("running", int(pid))
    started = session.signals.job_signals("echo", mark)
    assert started[:2] == [("JobStarting", ""), ("JobStarted", "")]
    emitted = [b for m, b in session.signals.items[mark:] if m == "EventEmitted"]
    assert ["socket", {"PROTO": "unix", "SOCKET_PATH": f"{world.tmp}/echo.sock"}] in emitted


async def test_the_tcp_socket_reaches_the_same_process(world: World) -> None:
    _state, main = await state(world.session, "echo")
    pid, _names, _fds, line = await ask(world.port, "over-tcp")
    assert (int(pid), line) == (main, "over-tcp")


async def test_a_connection_made_while_restarting_is_served_by_the_new_process(
    world: World,
) -> None:
    session = world.session
    _state, old = await state(session, "echo")
    (world.tmp / "hold").touch()  # the next pre-start waits at the gate
    # Reader and writer at once: opening never blocks, and "go" waits in the FIFO until the
    # pre-start opens it (it must stay open until then, or the FIFO forgets it).
    gate = os.open(world.tmp / "gate", os.O_RDWR | os.O_NONBLOCK)
    mark = session.signals.mark()
    try:
        await session.call("RestartJob", "sa{ss}b", ["echo", {}, False])
        # the starting event has been handled: the job is in pre-start, at the gate
        await session.signals.wait_for(
            lambda m, b: m == "EventEmitted" and b[0] == "starting" and b[1]["JOB"] == "echo",
            start=mark,
        )
        assert await state(session, "echo") == ("pre-start", 0)
        assert not psutil.pid_exists(old) or psutil.Process(old).status() == "zombie"
        reader, writer = await connect(world.tmp / "echo.sock")  # old gone, new not there
        writer.write(b"during-restart\n")
        await writer.drain()
        (world.tmp / "hold").unlink()
        os.write(gate, b"go\n")
        pid, _names, _fds, line = await answer(reader, writer)
    finally:
        with contextlib.suppress(FileNotFoundError):
            (world.tmp / "hold").unlink()
        os.close(gate)
    assert line == "during-restart"
    assert int(pid) != old
    assert await state(session, "echo") == ("running", int(pid))


async def test_a_connection_after_a_stop_starts_the_job_again(world: World) -> None:
    session = world.session
    await session.stop("echo")
    assert await state(session, "echo") == ("waiting", 0)
    pid, _names, _fds, line = await ask(world.tmp / "echo.sock", "after-stop")
    assert line == "after-stop"
    assert await state(session, "echo") == ("running", int(pid))


async def test_a_real_socket_activated_daemon(world: World) -> None:
    """systemd-socket-proxyd, socket-activated by busmgr, forwards to the echo job."""
    session = world.session
    pid, _names, _fds, line = await ask(world.tmp / "proxy.sock", "through-proxyd")
    assert line == "through-proxyd"
    _state, echo = await state(session, "echo")
    assert int(pid) == echo
    proxy_state, proxy = await state(session, "proxy")
    assert proxy_state == "running"
    assert psutil.Process(proxy).exe().endswith("systemd-socket-proxyd")
    await session.stop("proxy")


async def test_a_port_in_use_fails_that_job_alone(world: World) -> None:
    session = world.session
    port = world.busy_port
    assert f"busy.conf:1: socket tcp 127.0.0.1:{port}: Address already in use (job busy)" in (
        world.stderr()
    )
    with pytest.raises(DBusError) as err:
        await session.start("busy")
    assert f"socket tcp 127.0.0.1:{port}: Address already in use" in str(err.value)
    # the port is free now: the socket is made when the job starts
    world.busy.close()
    await session.start("busy")
    pid, _names, _fds, line = await ask(port, "now-free")
    assert (int(pid), line) == ((await state(session, "busy"))[1], "now-free")
    await session.stop("busy")


async def test_a_missing_directory_fails_that_job_alone(world: World) -> None:
    session = world.session
    path = world.tmp / "missing" / "x.sock"
    assert f"nodir.conf:1: socket unix {path}: directory {path.parent} does not exist" in (
        world.stderr()
    )
    with pytest.raises(DBusError) as err:
        await session.start("nodir")
    assert f"socket unix {path}: directory {path.parent} does not exist" in str(err.value)
    path.parent.mkdir()
    await session.start("nodir")
    assert stat.S_ISSOCK(path.stat().st_mode)
    await session.stop("nodir")


async def test_the_trigger_limit_stops_a_job_that_never_takes_its_connection(
    world: World,
) -> None:
    session = world.session
    mark = session.signals.mark()
    _reader, writer = await connect(world.tmp / "broken.sock")
    try:
        # each start fails at once (no such program), the connection stays waiting
        await count_signals(session, "JobStopped", "broken", mark, 20)
        await session.emit("probe")  # a round trip: the manager has handled what came before
        starts = [m for m, b in session.signals.items if m == "JobStarting" and b[0] == "broken"]
        assert len(starts) == 20
        assert "broken: socket activation paused: activated 20 times within 2s" in world.stderr()
        assert (await state(session, "broken"))[0] == "waiting"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_reload_keeps_changes_and_drops_sockets(world: World) -> None:
    session, tmp = world.session, world.tmp
    before = (tmp / "echo.sock").stat().st_ino
    proxy = (tmp / "proxy.sock").stat().st_ino
    assert (tmp / "missing" / "x.sock").exists()  # made when "nodir" started
    session.write_job(
        "proxy", f"socket unix {tmp}/proxy.sock 0640\nexec {PROXYD} {tmp}/echo.sock\n"
    )
    (session.services / "nodir.conf").unlink()
    await session.call("ReloadConfiguration")
    assert (tmp / "echo.sock").stat().st_ino == before  # the same socket, kept open
    st = (tmp / "proxy.sock").stat()
    assert (st.st_ino, stat.S_IMODE(st.st_mode)) == (proxy, 0o640)  # kept, new mode
    assert not (tmp / "missing" / "x.sock").exists()  # no job declares it any more
    _pid, _names, _fds, line = await ask(tmp / "echo.sock", "after-reload")
    assert line == "after-reload"


async def test_socket_files_stale_foreign_and_removed_at_exit(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # bound, never listening, closed: the file stays, nobody answers
    regular = tmp_path / "regular.sock"
    regular.write_text("not a socket\n")
    live = tmp_path / "live.sock"
    other = socket.socket(socket.AF_UNIX)  # another program's socket
    other.bind(str(live))
    other.listen()
    echo = "exec $PYTHON $TESTS_HELPERS/socket_echo.py\n"
    jobs = {
        "a": f"socket unix {stale}\n{echo}",
        "b": f"socket unix {regular}\n{echo}",
        "c": f"socket unix {live}\n{echo}",
    }
    with socket.socket(socket.AF_UNIX) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(str(stale))
    session = await start_session(tmp_path / "run", jobs)
    try:
        text = session.stderr.read_text()
        assert f"b.conf:1: socket unix {regular}: {regular} exists and is not a socket" in text
        assert f"c.conf:1: socket unix {live}: {live} is in use by another program" in text
        # the stale file, which refused connections, was replaced by busmgr's listening socket
        _pid, _names, _fds, line = await ask(stale, "replaced")
        assert line == "replaced"
    finally:
        await stop_session(session)
        other.close()
    assert not stale.exists()  # busmgr removes the files it made
    assert regular.read_text() == "not a socket\n"  # and nothing else
    assert stat.S_ISSOCK(live.stat().st_mode)
