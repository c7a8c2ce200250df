"""System mode (``busmgr daemon --system``): the manager itself checks each caller's uid, so on
the system bus only root may control jobs while anyone may look (SPEC §4)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from dbus_fast import Message
from dbus_fast.aio import MessageBus

from busmgr import MANAGER_BUS_NAME

from conftest import TIMEOUT, add_match

pytestmark = pytest.mark.integration

CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


async def run(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system_bus() -> AsyncIterator[tuple[str, Path]]:
    # A directory everyone may traverse, so a client running as nobody reaches the socket.
    directory = Path(tempfile.mkdtemp(prefix="busmgr-system-"))
    directory.chmod(0o755)
    (directory / "bus.conf").write_text(CONFIG.format(socket=directory / "bus"))
    daemon = await asyncio.create_subprocess_exec(
        "dbus-daemon",
        f"--config-file={directory / 'bus.conf'}",
        "--nofork",
        "--nopidfile",
        "--print-address=1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert daemon.stdout is not None
    address = (await asyncio.wait_for(daemon.stdout.readline(), TIMEOUT)).decode().strip()
    try:
        yield address, directory
    finally:
        daemon.send_signal(signal.SIGTERM)
        await daemon.wait()
        shutil.rmtree(directory, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def manager(system_bus: tuple[str, Path]) -> AsyncIterator[str]:
    address, directory = system_bus
    services = directory / "services.d"
    services.mkdir()
    (services / "web.conf").write_text("exec sleep 1000\n")
    (services / "loose.conf").write_text("exec sleep 1000\n")
    (services / "loose.conf").chmod(0o666)  # anyone could make root run anything
    watcher = await MessageBus(bus_address=address).connect()
    owned = asyncio.get_running_loop().create_future()

    def on_message(msg: Message) -> None:
        if msg.member == "NameOwnerChanged" and msg.body[0] == MANAGER_BUS_NAME and msg.body[2]:
            owned.done() or owned.set_result(None)

    watcher.add_message_handler(on_message)
    await add_match(watcher, f"type='signal',member='NameOwnerChanged',arg0='{MANAGER_BUS_NAME}'")
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env["DBUS_SYSTEM_BUS_ADDRESS"] = address
    log_file = open(directory / "manager.log", "wb")  # noqa: SIM115 - closed at the end
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "busmgr",
        "daemon",
        "--system",
        "--services-dir",
        str(services),
        "--state-dir",
        str(directory / "state"),
        env=env,
        stderr=log_file,
    )
    try:
        await asyncio.wait_for(owned, TIMEOUT)
        yield address
    finally:
        watcher.disconnect()
        with contextlib.suppress(Exception):
            await watcher.wait_for_disconnect()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        log_file.close()
        log = (directory / "manager.log").read_text()
        assert "loose.conf: refused in system mode:" in log
        assert "writable by group or others (mode 666)" in log


def busctl(address: str, *args: str, user: str | None = None) -> list[str]:
    argv = [
        "busctl",
        f"--address={address}",
        "call",
        MANAGER_BUS_NAME,
        "/org/busmgr/Manager1",
        "org.busmgr.Manager1",
        *args,
    ]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *argv]
    return argv


async def test_only_root_may_control_jobs_but_anyone_may_look(manager: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another user")
    rc, out, err = await run(
        *busctl(manager, "StartJob", "sa{ss}b", "web", "0", "true", user="nobody")
    )
    assert rc != 0
    assert "only root may control busmgr" in err and "uid 65534" in err
    rc, out, err = await run(*busctl(manager, "ListJobs", user="nobody"))
    assert rc == 0 and '"web" "" "waiting"' in out, err
    rc, out, err = await run(*busctl(manager, "StartJob", "sa{ss}b", "web", "0", "true"))
    assert rc == 0, err
    rc, out, err = await run(
        *busctl(manager, "StopJob", "sa{ss}b", "web", "0", "true", user="nobody")
    )
    assert rc != 0 and "only root" in err
    rc, out, err = await run(*busctl(manager, "StopJob", "sa{ss}b", "web", "0", "true"))
    assert rc == 0, err


async def test_access_denied_error_name(manager: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another user")
    rc, _out, err = await run(
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "dbus-send",
        f"--bus={manager}",
        "--print-reply",
        f"--dest={MANAGER_BUS_NAME}",
        "/org/busmgr/Manager1",
        "org.busmgr.Manager1.EmitEvent",
        "string:x",
        "dict:string:string:",
        "boolean:true",
    )
    assert rc != 0 and "org.busmgr.Error.AccessDenied" in err


async def test_a_job_file_others_may_write_is_refused(manager: str) -> None:
    rc, out, err = await run(*busctl(manager, "ListJobs"))
    assert rc == 0, err
    assert '"web"' in out and '"loose"' not in out
