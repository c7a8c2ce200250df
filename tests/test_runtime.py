"""The manager process's life (busmgr.runtime): start-up errors as one line, ``EndSession``, and
the private bus dying under a session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest
from dbus_fast import Message
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from busmgr import MANAGER_BUS_NAME

from conftest import (
    ALL_BUSES,
    TIMEOUT,
    Session,
    Signals,
    start_session,
    stop_session,
    wait_for_manager,
    wait_for_owner,
)

pytestmark = pytest.mark.integration


async def busmgr(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "busmgr",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    return proc.returncode or 0, err.decode()


@pytest.mark.parametrize(
    ("args", "path", "expected"),
    [
        # no dbus-daemon to start: the private bus starts inside the error handling now
        (["session"], "/nonexistent", 'exec "dbus-daemon": not found in PATH'),
        (
            ["session", "--broker"],
            "/nonexistent",
            'exec "dbus-broker": not found in PATH; install the Debian package dbus-broker',
        ),
        # no session bus to use
        (["daemon", "--session"], None, "no session bus: DBUS_SESSION_BUS_ADDRESS is not set"),
        (["daemon", "--address", "garbage"], None, "cannot connect to garbage: "),
        # the path the error is about is named, not just "[Errno 2]"
        (
            ["daemon", "--address", "unix:path=/nonexistent"],
            None,
            "cannot connect to unix:path=/nonexistent: No such file or directory",
        ),
    ],
)
async def test_start_up_errors_are_one_line_and_exit_1(
    tmp_path: Path, args: list[str], path: str | None, expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    if path is not None:
        env["PATH"] = path
    status, err = await busmgr(
        *args, "--no-import", "--state-dir", str(tmp_path), "--services-dir", str(tmp_path), env=env
    )
    assert status == 1
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("busmgr: "), err
    assert expected in lines[0]
    assert "Traceback" not in err


async def test_a_bug_during_start_up_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    # A bug (here: loading the jobs raises) once the private bus runs: one line naming the
    # details file, exit 1, no traceback, and the bus is stopped, never started again.
    code = (
        "import sys, busmgr.catalog as c\n"
        "def boom(*a, **k):\n    raise RuntimeError('planted bug')\n    yield\n"
        "c.catalog_steps = boom\n"
        "from busmgr.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "session", "--no-import", "--print-address",
        "--state-dir", str(tmp_path / "state"), "--services-dir", str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)},  # the private bus's directory
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    text = err.decode()
    assert proc.returncode == 1, text
    lines = [line for line in text.splitlines() if line.startswith("busmgr: ")]
    details = tmp_path / "state" / "internal-errors.log"
    assert lines == [
        f"busmgr: internal error: RuntimeError('planted bug') (details in {details})"
    ], text
    assert "Traceback" not in text and "starting it again" not in text
    assert "planted bug" in details.read_text()
    assert "the private dbus-daemon" not in text  # it ran, and was stopped, not lost
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("busmgr-")] == []
    buses = [p.info["cmdline"] or [] for p in psutil.process_iter(["name", "cmdline"])
             if p.info["name"] == "dbus-daemon"]  # fmt: skip
    assert not [argv for argv in buses if str(tmp_path) in " ".join(argv)]


async def owner_pid(bus: MessageBus, name: str) -> int:
    owner = await wait_for_owner(bus, name)
    reply = await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="GetConnectionUnixProcessID",
            signature="s",
            body=[owner],
        )
    )
    return int(reply.body[0])


JOBS = {
    "first": """
        post-stop exec sh -c 'echo first >> $ORDER'
        exec sleep 1000
    """,
    "second": """
        start on started first
        post-stop exec sh -c 'echo second >> $ORDER'
        exec sleep 1000
    """,
}


@pytest.mark.parametrize("bus", ALL_BUSES)
async def test_end_session_emits_desktop_end_stops_in_reverse_order_and_exits_0(
    tmp_path: Path, bus: str
) -> None:
    order = tmp_path / "order"
    env = dict(os.environ, ORDER=str(order))
    sess = await start_session(tmp_path, JOBS, env=env, bus=bus)
    mark = sess.signals.mark()
    await sess.start("first")
    await sess.wait_running("second")  # started by first's started event, after it
    await sess.call("EndSession")
    await sess.signals.wait_for(
        lambda m, b: m == "EventEmitted" and b[0] == "desktop-end", start=mark
    )
    assert await asyncio.wait_for(sess.proc.wait(), 60) == 0  # it ends by itself
    assert order.read_text().split() == ["second", "first"]  # reverse start order
    await stop_session(sess)


@pytest.mark.parametrize("bus", ALL_BUSES)
async def test_a_dead_private_bus_is_restarted_at_the_same_address(
    tmp_path: Path, bus: str
) -> None:
    # The reliability issue: when the bus went away, the manager killed every job and exited 1.
    # Now the session's bus is started again where it was; plain jobs never notice, and a dbus
    # job, whose name died with the old bus, counts as failed and respawns.
    jobs = {
        "plain": "exec sleep 1000\n",
        "named": (
            "dbus org.test.Named\nrespawn\n"
            "exec $PYTHON $TESTS_HELPERS/dbus_service.py --name org.test.Named\n"
        ),
    }
    address_file = tmp_path / "address"
    sess = await start_session(
        tmp_path, jobs, extra=["--no-import", "--address-file", str(address_file)], bus=bus
    )
    plain = (await sess.props(await sess.start("plain")))["MainPID"]
    named = (await sess.props(await sess.start("named")))["MainPID"]
    (daemon,) = [p for p in psutil.Process(sess.proc.pid).children() if p.name() == bus]
    address_file.unlink()  # written again once the manager is back on the bus
    daemon.send_signal(signal.SIGKILL)
    with contextlib.suppress(EOFError, ConnectionError):  # ours died with it
        await asyncio.wait_for(sess.bus.wait_for_disconnect(), TIMEOUT)
    back = await wait_for_manager(sess.address, address_file)
    try:
        named_again = await owner_pid(back, "org.test.Named")  # respawned, owns its name
        assert named_again != named
        client = Session(sess.proc, sess.address, back, sess.services, sess.state, Signals(),
                         sess.stderr)  # fmt: skip
        assert (await client.instance("plain"))["MainPID"] == plain  # untouched
        assert (await client.instance("named"))["MainPID"] == named_again
        # The jobs' address names no guid: libdbus (dbus-send here) refuses a server whose
        # guid is not the address's, and the new daemon has a new one.
        job_address = psutil.Process(plain).environ()["DBUS_SESSION_BUS_ADDRESS"]
        assert job_address == sess.address and "guid=" not in job_address
        ping = await asyncio.create_subprocess_exec(
            "dbus-send", f"--bus={job_address}", "--print-reply", "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus", "org.freedesktop.DBus.Peer.Ping",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(ping.communicate(), TIMEOUT)
        assert ping.returncode == 0, err
        log = sess.stderr.read_text()
        assert f"the private {bus} killed by signal KILL; starting it again" in log
        assert "Traceback" not in log
    finally:
        sess.bus = back
        await stop_session(sess)


async def test_sigterm_answers_a_waiting_caller_with_a_reason(tmp_path: Path) -> None:
    # Found by the reliability review: SIGTERM while a caller waited left it with NoReply (the
    # connection closed before the reply went out) and logged an EBADF traceback.
    jobs = {"slowpoke": "dbus org.test.Never\nready timeout 60\nexec sleep 1000\n"}
    sess = await start_session(tmp_path, jobs)
    mark = sess.signals.mark()
    waiting = asyncio.ensure_future(sess.start("slowpoke"))  # wait=True: until ready
    await sess.signals.wait_for(lambda m, b: m == "JobStarting" and b[0] == "slowpoke", start=mark)
    sess.proc.send_signal(signal.SIGTERM)
    with pytest.raises(DBusError) as err:
        await asyncio.wait_for(waiting, TIMEOUT)
    assert err.value.type == "org.busmgr.Error.JobFailed"
    assert err.value.text == "job slowpoke: the manager is shutting down"
    assert await asyncio.wait_for(sess.proc.wait(), 60) == 0
    log = sess.stderr.read_text()
    assert "Traceback" not in log and "EBADF" not in log and "Bad file descriptor" not in log
    await stop_session(sess)


_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


async def start_bus(config: Path) -> asyncio.subprocess.Process:
    """A dbus-daemon of this test on ``config``'s socket; returns once it listens."""
    proc = await asyncio.create_subprocess_exec(
        "dbus-daemon",
        f"--config-file={config}",
        "--nofork",
        "--nopidfile",
        "--print-address=1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).strip()
    return proc


async def stop_bus(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    await asyncio.wait_for(proc.wait(), TIMEOUT)


async def test_the_daemon_keeps_its_jobs_when_the_bus_goes_and_comes_back(tmp_path: Path) -> None:
    socket_path = tmp_path / "bus"
    config = tmp_path / "bus.conf"
    config.write_text(_BUS_CONFIG.format(socket=socket_path))
    address = f"unix:path={socket_path}"
    services = tmp_path / "services.d"
    services.mkdir()
    (services / "plain.conf").write_text("exec sleep 1000\n")
    bus_proc = await start_bus(config)
    with open(tmp_path / "stderr.log", "wb") as stderr:
        manager = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "busmgr", "daemon", "--address", address, "--no-import",
            "--services-dir", str(services), "--state-dir", str(tmp_path / "state"),
            stderr=stderr, env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)},
        )  # fmt: skip
    client: MessageBus | None = None
    try:
        client = await MessageBus(bus_address=address).connect()
        await wait_for_owner(client, MANAGER_BUS_NAME)
        session = Session(manager, address, client, services, tmp_path, Signals(), tmp_path)
        pid = (await session.props(await session.start("plain")))["MainPID"]

        await stop_bus(bus_proc)  # the bus goes away...
        with contextlib.suppress(EOFError, ConnectionError):
            await asyncio.wait_for(client.wait_for_disconnect(), TIMEOUT)
        socket_path.unlink(missing_ok=True)
        bus_proc = await start_bus(config)  # ... and comes back at the same address
        client = session.bus = await MessageBus(bus_address=address).connect()
        await wait_for_owner(client, MANAGER_BUS_NAME)  # the manager owns its name again

        props = await session.instance("plain")
        assert (props["State"], props["MainPID"]) == ("running", pid)  # never stopped
        assert psutil.Process(pid).is_running()
        await session.stop("plain")
    finally:
        if client is not None:
            client.disconnect()
        if manager.returncode is None:
            manager.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(manager.wait(), 60)
        await stop_bus(bus_proc)
    assert status == 0
    log = (tmp_path / "stderr.log").read_text()
    assert "back on the bus at " + address in log and "Traceback" not in log
