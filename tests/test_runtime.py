"""The manager process's life (busmgr.runtime): start-up errors as one line, ``EndSession``, and
the private bus dying under a session."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from conftest import ALL_BUSES, TIMEOUT, start_session, stop_session

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
async def test_private_bus_dying_ends_the_session_cleanly(tmp_path: Path, bus: str) -> None:
    sess = await start_session(tmp_path, {"svc": "exec sleep 1000\n"}, bus=bus)
    await sess.start("svc")
    (daemon,) = [p for p in psutil.Process(sess.proc.pid).children() if p.name() == bus]
    daemon.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(sess.proc.wait(), 60) == 1
    err = sess.stderr.read_text()
    assert f"the private {bus} killed by signal KILL" in err
    assert "Traceback" not in err
    await stop_session(sess, expect_status=1)  # and nothing it started is left
