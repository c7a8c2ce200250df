"""busmgr as dbus-broker's launcher (issue 17), on the real broker with real services.

What only the broker path has: every kind of failed activation ends in a ``Reset`` (the broker
has no activation timeout), whatever a job or a client does the bus stays up (any protocol
mistake of the launcher would end it: the broker's pid is checked after each test), the bus's
own ``ReloadConfig`` and SIGHUP add and release activatable names, ``session --broker --
COMMAND`` leaves nothing behind, and a broker version busmgr does not speak is refused. The
activation, readiness and failure tests shared with dbus-daemon are in ``test_activation.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from conftest import (
    DBUS_BROKER,
    HELPERS,
    PYTHON,
    TIMEOUT,
    Session,
    require_bus,
    start_session,
    stop_session,
)

pytestmark = pytest.mark.integration
BUSES = (DBUS_BROKER,)

DBUS = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
SERVICE_PATH = "/org/test/Service"
SERVICE_IFACE = "org.test.Service"
PROMPT = 5.0  # far below a caller's 25 s timeout


def service(name: str, *options: str, stanzas: str = "", claim: str = "") -> str:
    return f"""
        dbus {name}
        {stanzas}
        exec $PYTHON $TESTS_HELPERS/dbus_service.py --name {claim or name} {" ".join(options)}
    """


JOBS = {
    "echo": service("org.test.BEcho"),
    "exiter": service("org.test.Exiter", "--exit-before-claim 3"),
    "killed": service("org.test.Killed", "--signal-before-claim SEGV"),
    "silent": service("org.test.BSilent", "--never-claim", stanzas="ready timeout 1"),
    "wrongname": service("org.test.Wrong", claim="org.test.NotWrong", stanzas="ready timeout 1"),
    "refused": service("org.test.Refused", stanzas="instance $NO_SUCH_VARIABLE"),
    "pending": service("org.test.Pending", "--never-claim", stanzas="ready timeout 60"),
}


async def call(bus: MessageBus, destination: str, member: str, *args: Any, **kw: Any) -> Message:
    msg = Message(
        destination=destination,
        path=kw.get("path", SERVICE_PATH),
        interface=kw.get("interface", SERVICE_IFACE),
        member=member,
        signature=kw.get("signature", ""),
        body=list(args),
    )
    return await asyncio.wait_for(bus.call(msg), TIMEOUT)


async def daemon_call(bus: MessageBus, member: str, *args: Any, signature: str = "") -> Message:
    return await call(bus, DBUS, member, *args, path=DBUS_PATH, interface=DBUS, signature=signature)


async def activatable(session: Session) -> set[str]:
    reply = await daemon_call(session.bus, "ListActivatableNames")
    return set(reply.body[0])


def broker_pid(session: Session) -> int:
    (broker,) = [p for p in session.descendants() if p.name() == "dbus-broker"]
    return broker.pid


@pytest.fixture
def bus_survives(session: Session) -> Any:
    """The test must leave the broker it found running: a protocol mistake would end it."""
    pid = broker_pid(session)
    yield
    assert broker_pid(session) == pid, "the broker's bus went down"
    assert "Traceback" not in session.stderr.read_text()


# ------------------------------------------------------------------ failures
async def test_every_failure_resets_its_callers_at_once(
    session: Session, bus_survives: None
) -> None:
    names = {
        "org.test.Exiter": "job exiter failed: RESULT=failed PROCESS=main exited with status 3",
        "org.test.Killed": "job killed failed: RESULT=failed PROCESS=main killed by signal SEGV",
        "org.test.BSilent": "org.test.BSilent",
        "org.test.Wrong": "not ready after 1s",
        "org.test.Refused": "job refused was not started: the instance name expands to nothing",
    }
    clients = [await MessageBus(bus_address=session.address).connect() for _ in range(3)]
    started = time.monotonic()
    try:
        replies = await asyncio.gather(
            *(call(c, name, "Echo", "x", signature="s") for name in names for c in clients)
        )
    finally:
        for c in clients:
            c.disconnect()
    elapsed = time.monotonic() - started
    assert elapsed < PROMPT
    for reply in replies:
        assert reply.message_type is MessageType.ERROR
        assert reply.error_name == "org.freedesktop.DBus.Error.NameHasNoOwner"
        assert "Could not activate remote peer" in reply.body[0]
    log = session.stderr.read_text()
    for name, reason in names.items():
        assert f"activation of {name} failed: " in log and reason in log, (name, log)
    # the bus still activates
    reply = await call(session.bus, "org.test.BEcho", "Echo", "still", signature="s")
    assert reply.body == ["still"]
    await session.stop("echo")


async def test_hostile_clients_do_not_end_the_bus(session: Session, bus_survives: None) -> None:
    # Garbage instead of the SASL handshake, then garbage after it.
    path = session.address.removeprefix("unix:path=")
    for data in (b"\xff\x00garbage\r\n", b"\0AUTH EXTERNAL 30\r\nBEGIN\r\n" + b"\x99" * 64):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect(path)
            raw.sendall(data)
    # Environment the broker passes on that no job may take; a good one still arrives.
    reply = await daemon_call(
        session.bus,
        "UpdateActivationEnvironment",
        {"1BAD": "x", "A\u00e9": "y", "GOOD_ONE": "a=b"},
        signature="a{ss}",
    )
    assert reply.message_type in (MessageType.METHOD_RETURN, MessageType.ERROR)
    reply = await daemon_call(
        session.bus, "UpdateActivationEnvironment", {"GOOD_TWO": "c=d"}, signature="a{ss}"
    )
    assert reply.message_type is MessageType.METHOD_RETURN
    reply = await call(session.bus, "org.test.BEcho", "Getenv", "GOOD_TWO", signature="s")
    assert reply.body == ["c=d"]
    # A name nobody provides, and one the bus refuses to activate.
    reply = await call(session.bus, "org.test.Nobody", "Echo", "x", signature="s")
    assert reply.error_name == "org.freedesktop.DBus.Error.ServiceUnknown"
    await session.stop("echo")


# ------------------------------------------------------------------ reloads
async def test_the_buses_reload_config_adds_and_releases_names(
    session: Session, bus_survives: None
) -> None:
    assert "org.test.Fresh" not in await activatable(session)
    session.write_job("fresh", service("org.test.Fresh"))
    session.write_job("broken", "dbus org.test.Broken\nexec true\nrespwan\n")
    reply = await daemon_call(session.bus, "ReloadConfig")
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body  # it ran
    assert "broken.conf:3: " in session.stderr.read_text()  # and said what it could not load
    names = await activatable(session)
    assert "org.test.Fresh" in names and "org.test.Broken" not in names
    reply = await call(session.bus, "org.test.Fresh", "Pid")
    pid = reply.body[0]

    (session.services / "fresh.conf").unlink()
    (session.services / "broken.conf").unlink()
    reply = await daemon_call(session.bus, "ReloadConfig")
    assert reply.message_type is MessageType.METHOD_RETURN
    assert "org.test.Fresh" not in await activatable(session)
    mark = session.signals.mark()
    os.kill(pid, signal.SIGTERM)  # the job kept running through the reload; let it go
    await session.signals.wait_for(lambda m, b: m == "JobStopped" and b[0] == "fresh", start=mark)


async def test_sighup_releases_a_name_and_its_waiting_callers_hear_it(
    session: Session, bus_survives: None
) -> None:
    mark = session.signals.mark()
    waiting = asyncio.ensure_future(
        call(session.bus, "org.test.Pending", "Echo", "x", signature="s")
    )
    await session.signals.wait_for(
        lambda m, b: m == "JobStarting" and b[0] == "pending", start=mark
    )
    (session.services / "pending.conf").unlink()
    session.proc.send_signal(signal.SIGHUP)
    reply = await asyncio.wait_for(waiting, PROMPT)
    assert reply.message_type is MessageType.ERROR
    assert "released" in reply.body[0], reply.body
    assert "org.test.Pending" not in await activatable(session)


# ------------------------------------------------------------------ the session's life
async def test_session_broker_command_leaves_nothing_behind(tmp_path: Path) -> None:
    require_bus(DBUS_BROKER)
    services = tmp_path / "services.d"
    services.mkdir()
    (services / "cmdsvc.conf").write_text(
        f"dbus org.test.Cmd\nexec {PYTHON} {HELPERS}/dbus_service.py --name org.test.Cmd\n"
        "start on startup\n"
    )
    (services / "bg.conf").write_text("start on startup\nexec sleep 1000\n")
    script = (
        "gdbus call --session --dest org.test.Cmd --object-path /org/test/Service "
        "--method org.test.Service.Echo hi && echo ready && read line && exit 7"
    )
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "busmgr",
        "session",
        "--broker",
        "--no-import",
        "--services-dir",
        str(services),
        "--state-dir",
        str(tmp_path / "state"),
        "--",
        "sh",
        "-c",
        script,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    lines = [await asyncio.wait_for(proc.stdout.readline(), TIMEOUT) for _ in range(2)]
    assert lines == [b"('hi',)\n", b"ready\n"]
    inside = psutil.Process(proc.pid).children(recursive=True)
    assert {"dbus-broker", "sleep"} <= {p.name() for p in inside}
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 7, err.decode()
    left = [p for p in inside if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in left:  # only processes this session started
        p.kill()
    assert not left, f"processes left behind: {left}"
    assert not [p for p in os.listdir(tmp_path) if p.startswith("busmgr-")]
    assert "Traceback" not in err.decode()


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("dbus-broker 12", "is version 12; busmgr speaks the controller protocol of dbus-broker"),
    ],
)
async def test_a_broker_version_busmgr_does_not_speak_is_refused(
    tmp_path: Path, version: str, expected: str
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "dbus-broker"
    fake.write_text(f"#!/bin/sh\necho '{version}'\n")
    fake.chmod(0o755)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path), PATH=f"{bindir}:{os.environ['PATH']}")
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "busmgr",
        "session",
        "--broker",
        "--no-import",
        "--services-dir",
        str(tmp_path),
        "--state-dir",
        str(tmp_path / "state"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    lines = err.decode().splitlines()
    assert proc.returncode == 1
    assert len(lines) == 1 and lines[0].startswith("busmgr: "), lines
    assert expected in lines[0]
    assert not [p for p in os.listdir(tmp_path) if p.startswith("busmgr-")]


async def test_the_bus_accepts_only_its_user() -> None:
    # Another uid may not connect (the session policy), as on dbus-daemon's session bus.
    if os.getuid() != 0:
        pytest.skip("needs root to become another user")
    script = (
        "import asyncio, os, sys\n"
        "from dbus_fast.aio import MessageBus\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "async def main():\n"
        "    try:\n"
        "        await MessageBus(bus_address=sys.argv[1]).connect()\n"
        "    except Exception as e:\n"
        "        print('refused', type(e).__name__, e)\n"
        "        return\n"
        "    print('connected')\n"
        "asyncio.run(main())\n"
    )
    # A directory the other user can reach (pytest's own are root's alone), so that only the
    # bus's policy can refuse it.
    tmp = Path(tempfile.mkdtemp(prefix="busmgr-test-", dir="/tmp"))
    tmp.chmod(0o755)
    sess = await start_session(tmp, {}, bus=DBUS_BROKER)
    try:
        socket_path = Path(sess.address.removeprefix("unix:path="))
        socket_path.parent.chmod(0o755)
        socket_path.chmod(0o777)
        proc = await asyncio.create_subprocess_exec(
            PYTHON, "-c", script, sess.address, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        await stop_session(sess)
        shutil.rmtree(tmp, ignore_errors=True)
    text = out.decode()
    assert text.startswith("refused") and "PermissionError" not in text, text
