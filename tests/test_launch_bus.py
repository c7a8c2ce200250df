"""``busmgr daemon --launch-bus`` (issue 11): busmgr starts the bus itself, as its supervised
child, and is its activator, as on a machine without systemd (or in a container).

The system bus is launched with Debian's stock configuration adapted to the test (its own
socket, see :mod:`sysbus`) through ``--bus-config``; the session bus at
``$XDG_RUNTIME_DIR/bus`` with the machine's own ``session.conf``. Each test starts its
manager, uses the bus, stops the manager with SIGTERM and checks that nothing it started is
left: not the bus, not a service, not busmgr's configuration or activation files.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio
from dbus_fast import Message
from dbus_fast.aio import MessageBus

from busmgr import MANAGER_BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH

from conftest import BLOCKED_LIMIT, TIMEOUT, call_method, wait_for_manager
from sysbus import (
    STOCK_POLICY_DIR,
    SYSTEM_PYTHON,
    SYSTEM_SERVICE,
    loop_blocked,
    service_file,
    services_policy,
    shipped_policy,
    start_bus,
    stock_config,
    world_dir,
)

pytestmark = pytest.mark.integration

TEST = "/org/busmgr/Test"
TEST_IFACE = "org.busmgr.Test"


@dataclass
class Launched:
    """A running ``busmgr daemon --launch-bus``, the address of its bus, a client on it."""

    proc: asyncio.subprocess.Process
    address: str
    stderr: Path
    client: MessageBus

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def bus_daemon(self) -> psutil.Process:
        (daemon,) = [
            p for p in psutil.Process(self.proc.pid).children() if p.name() == "dbus-daemon"
        ]
        return daemon

    async def call(self, destination: str, member: str, signature: str = "", body: Any = None,
                   path: str = TEST, interface: str = TEST_IFACE) -> list[Any]:  # fmt: skip
        return await call_method(self.client, destination, path, interface, member, signature, body)

    async def stop(self) -> tuple[int, list[psutil.Process]]:
        """SIGTERM; the exit status and whatever it had started that is still there."""
        left = psutil.Process(self.proc.pid).children(recursive=True)
        self.client.disconnect()
        self.proc.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(self.proc.wait(), 60)
        survivors = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        for p in survivors:  # only processes this manager started
            p.kill()
        return status, survivors


_RUNNING: list[Launched] = []  # every manager a test launched, stopped after the test


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def _nothing_left() -> AsyncIterator[None]:
    """Stop what a test launched and did not stop itself (it failed half-way)."""
    yield
    while _RUNNING:
        launched = _RUNNING.pop()
        if launched.proc.returncode is None:
            await launched.stop()


async def launch(argv: list[str], env: dict[str, str], stderr: Path) -> Launched:
    """Run busmgr with ``--print-address`` and connect to the bus it prints once ready."""
    env = {**env, "BUSMGR_LOOP_DEBUG": str(BLOCKED_LIMIT), "BUSMGR_LOG_LEVEL": "INFO"}
    with open(stderr, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "busmgr", "daemon", "--print-address", *argv,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    assert proc.stdout is not None
    address = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode().strip()
    if not address:
        await proc.wait()
        pytest.fail(f"busmgr exited with {proc.returncode}: {stderr.read_text()}")
    client = await MessageBus(bus_address=address).connect()
    launched = Launched(proc, address, stderr, client)
    _RUNNING.append(launched)
    return launched


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBUS_", "XDG_RUNTIME"))}
    return {**env, **extra}


@pytest_asyncio.fixture(loop_scope="module")
async def top() -> AsyncIterator[Path]:
    directory = world_dir("busmgr-launch-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_the_system_bus_as_busmgrs_child_activates_every_installed_service(
    top: Path,
) -> None:
    activation = top / "run" / "system-services"
    installed = top / "system-services"
    # No SystemdService= line: on a bus busmgr did not launch, dbus-daemon would start this
    # one itself; on the bus it launches, busmgr's files come first.
    service_file(installed, "org.busmgr.Test.Plain", "nobody")
    policy = shipped_policy(
        top / "policy", activation, ["org.busmgr.Manager1.conf", "busmgr-activation.conf"]
    )
    services_policy(policy, ["org.busmgr.Test.Plain"])
    config = stock_config(top / "bus", [installed], [STOCK_POLICY_DIR, policy], top / "bus.conf")
    argv = [
        "--system", "--launch-bus", "--bus-config", str(config),
        "--activation-dir", str(activation), "--import-dir", str(installed),
        "--services-dir", str(top / "services.d"), "--state-dir", str(top / "state"),
    ]  # fmt: skip
    busmgr = await launch(argv, base_env(), top / "manager.log")
    assert busmgr.address == f"unix:path={top / 'bus'}"
    daemon = busmgr.bus_daemon()
    uid, _gid, _groups, pid = await busmgr.call("org.busmgr.Test.Plain", "Whoami")
    assert uid == 65534
    assert psutil.Process(pid).ppid() == busmgr.proc.pid  # started, and reaped, by busmgr
    starter = await busmgr.call("org.busmgr.Test.Plain", "Getenv", "s", ["DBUS_STARTER_BUS_TYPE"])
    assert starter == ["system"]
    manager = {"path": MANAGER_PATH, "interface": MANAGER_INTERFACE}
    # Returns once busmgr counts the job running (the caller above only needed the name).
    await busmgr.call(MANAGER_BUS_NAME, "ActivateName", "s", ["org.busmgr.Test.Plain"], **manager)
    rows = await busmgr.call(MANAGER_BUS_NAME, "ListJobs", **manager)
    assert ("org.busmgr.Test.Plain", "", "running") in [tuple(r[:3]) for r in rows[0]]
    assert (activation.parent / "busmgr-system-bus.conf").exists()
    status, survivors = await busmgr.stop()
    log = busmgr.log()
    assert status == 0, log
    assert not survivors, survivors
    assert not daemon.is_running()
    assert not (activation.parent / "busmgr-system-bus.conf").exists()
    assert list(activation.iterdir()) == []
    assert "D-Bus activation: activator mode" in log
    assert "Traceback" not in log and not loop_blocked(log), log


async def test_a_users_session_bus_and_its_death(top: Path) -> None:
    services = top / "services.d"
    services.mkdir()
    name = "org.busmgr.Test.Session"
    (services / "sess.conf").write_text(
        f"dbus {name}\nexec {SYSTEM_PYTHON} {SYSTEM_SERVICE} {name}\n"
    )
    argv = ["--session", "--launch-bus", "--no-import", "--services-dir", str(services),
            "--state-dir", str(top / "state"), "--address-file", str(top / "address")]  # fmt: skip
    busmgr = await launch(argv, base_env(XDG_RUNTIME_DIR=str(top)), top / "manager.log")
    assert busmgr.address == f"unix:path={top / 'bus'}"
    got = await busmgr.call("org.busmgr.Test.Session", "Getenv", "s", ["DBUS_STARTER_BUS_TYPE"])
    assert got == ["session"]
    # The bus is supervised: when it dies, busmgr launches it again at the same address (the
    # jobs keep running; one that lost its bus name counts as failed) and is back on it.
    old_daemon = busmgr.bus_daemon()
    busmgr.client.disconnect()
    (top / "address").unlink()  # written again once the manager is back on the bus
    old_daemon.send_signal(signal.SIGKILL)  # a process this manager started
    client = await wait_for_manager(busmgr.address, top / "address")
    try:
        again = await asyncio.wait_for(client.call(Message(
            destination="org.busmgr.Test.Session", path=TEST, interface=TEST_IFACE,
            member="Getenv", signature="s", body=["DBUS_STARTER_BUS_TYPE"],
        )), TIMEOUT)  # fmt: skip
        assert again is not None and again.body == ["session"], again  # activated again
    finally:
        client.disconnect()
    assert busmgr.bus_daemon().pid != old_daemon.pid
    status, survivors = await busmgr.stop()
    log = busmgr.log()
    assert status == 0, log
    assert not survivors, survivors
    assert "the dbus-daemon busmgr launched killed by signal KILL; starting it again" in log
    assert "Traceback" not in log and not loop_blocked(log), log


async def test_the_system_bus_as_dbus_broker_with_busmgr_its_launcher(top: Path) -> None:
    # The same installed system service and policy as above, on dbus-broker: busmgr
    # translates the bus configuration into the broker's policy and listens where it says.
    installed = top / "system-services"
    service_file(installed, "org.busmgr.Test.Plain", "nobody")
    policy = shipped_policy(top / "policy", top / "unused", ["org.busmgr.Manager1.conf"])
    services_policy(policy, ["org.busmgr.Test.Plain"])
    config = stock_config(top / "bus", [installed], [STOCK_POLICY_DIR, policy], top / "bus.conf")
    argv = [
        "--system", "--launch-bus", "--broker", "--bus-config", str(config),
        "--import-dir", str(installed), "--services-dir", str(top / "services.d"),
        "--state-dir", str(top / "state"),
    ]  # fmt: skip
    busmgr = await launch(argv, base_env(), top / "manager.log")
    assert busmgr.address == f"unix:path={top / 'bus'}"
    (broker,) = [p for p in psutil.Process(busmgr.proc.pid).children() if p.name() == "dbus-broker"]
    uid, _gid, _groups, pid = await busmgr.call("org.busmgr.Test.Plain", "Whoami")
    assert uid == 65534
    assert psutil.Process(pid).ppid() == busmgr.proc.pid  # started, and reaped, by busmgr
    starter = await busmgr.call("org.busmgr.Test.Plain", "Getenv", "s", ["DBUS_STARTER_BUS_TYPE"])
    assert starter == ["system"]
    status, survivors = await busmgr.stop()
    log = busmgr.log()
    assert status == 0, log
    assert not survivors, survivors
    assert not broker.is_running()
    assert "Traceback" not in log and not loop_blocked(log), log


async def test_a_users_session_bus_as_dbus_broker_and_its_death(top: Path) -> None:
    services = top / "services.d"
    services.mkdir()
    name = "org.busmgr.Test.Session"
    (services / "sess.conf").write_text(
        f"dbus {name}\nexec {SYSTEM_PYTHON} {SYSTEM_SERVICE} {name}\n"
    )
    argv = ["--session", "--launch-bus", "--broker", "--no-import", "--services-dir",
            str(services), "--state-dir", str(top / "state"),
            "--address-file", str(top / "address")]  # fmt: skip
    busmgr = await launch(argv, base_env(XDG_RUNTIME_DIR=str(top)), top / "manager.log")
    assert busmgr.address == f"unix:path={top / 'bus'}"
    got = await busmgr.call(name, "Getenv", "s", ["DBUS_STARTER_BUS_TYPE"])
    assert got == ["session"]

    def broker() -> psutil.Process:
        children = psutil.Process(busmgr.proc.pid).children()
        (found,) = [p for p in children if p.name() == "dbus-broker"]
        return found

    old = broker()
    busmgr.client.disconnect()
    (top / "address").unlink()  # written again once the manager is back on the bus
    old.send_signal(signal.SIGKILL)  # a process this manager started
    client = await wait_for_manager(busmgr.address, top / "address")
    try:
        again = await asyncio.wait_for(client.call(Message(
            destination=name, path=TEST, interface=TEST_IFACE,
            member="Getenv", signature="s", body=["DBUS_STARTER_BUS_TYPE"],
        )), TIMEOUT)  # fmt: skip
        assert again is not None and again.body == ["session"], again  # activated again
    finally:
        client.disconnect()
    assert broker().pid != old.pid
    status, survivors = await busmgr.stop()
    log = busmgr.log()
    assert status == 0, log
    assert not survivors, survivors
    assert "the dbus-broker busmgr launched killed by signal KILL; starting it again" in log
    assert "Traceback" not in log and not loop_blocked(log), log


async def test_a_bus_already_listening_there_is_never_replaced(top: Path) -> None:
    (top / "bus.conf").write_text(
        f"<busconfig><type>session</type><listen>unix:path={top / 'bus'}</listen>"
        '<policy context="default"><allow send_destination="*"/><allow own="*"/></policy>'
        "</busconfig>\n"
    )
    other = await start_bus(top / "bus.conf", top / "other.log", systemd_activation=False)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "busmgr", "daemon", "--session", "--launch-bus", "--no-import",
            "--state-dir", str(top / "state"), "--services-dir", str(top),
            env=base_env(XDG_RUNTIME_DIR=str(top)), stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        await other.stop()
    assert proc.returncode == 1
    assert err.decode().strip() == (
        f"busmgr: a bus already listens at {top / 'bus'}: stop it first, or run busmgr "
        "without --launch-bus on that bus"
    )
