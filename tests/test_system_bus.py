"""busmgr on a system bus with Debian's stock policy (issue 11): ``busmgr daemon --system``.

The bus is a private ``dbus-daemon`` run with the stock ``/usr/share/dbus-1/system.conf``
adapted to the test (:mod:`sysbus`): the machine's own ``system.d`` policy, the shipped
``dbus-policy/`` files, and a package's policy file for the test services. Installed system
services are ``helpers/system_service.py`` (run by the system's python as ``nobody``, through
its ``system-services`` file as a package ships it) and, from the machine itself, polkitd and
the ``/bin/false`` files of systemd.

Two more buses show what happens when the policy refuses a name: ``org.freedesktop.systemd1``
(helper mode, said in one line; a warning when the bus does not read busmgr's activation files)
and ``org.busmgr.Manager1`` itself (one error line, exit status 1).

Nothing sleeps: every wait is for a reply, a signal, a process exit or the manager owning its
name.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from busmgr import MANAGER_BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH
from busmgr.bus.values import instance_path

from conftest import TIMEOUT, call_method
from sysbus import (
    STOCK_POLICY_DIR,
    SYSTEM_PYTHON,
    SYSTEM_SERVICE,
    Bus,
    Manager,
    as_user,
    loop_blocked,
    run,
    service_file,
    services_policy,
    shipped_policy,
    start_bus,
    start_manager,
    stock_config,
    world_dir,
)

pytestmark = pytest.mark.integration

INSTALLED = Path("/usr/share/dbus-1/system-services")
POLKIT = "org.freedesktop.PolicyKit1"
TEST = "/org/busmgr/Test"
TEST_IFACE = "org.busmgr.Test"
PROMPT = 5.0  # far below the bus's 25 s timeout: a failure this late came from the bus
NO_USER = "busmgr-no-such-user"


@dataclass
class World:
    directory: Path
    bus: Bus
    manager: Manager
    client: MessageBus
    activation: Path

    async def call(
        self,
        destination: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        path: str = TEST,
        interface: str = TEST_IFACE,
    ) -> list[Any]:
        return await call_method(self.client, destination, path, interface, member, signature, body)

    async def manager_call(self, member: str, signature: str = "", body: Any = None) -> list[Any]:
        return await self.call(
            MANAGER_BUS_NAME,
            member,
            signature,
            body,
            path=MANAGER_PATH,
            interface=MANAGER_INTERFACE,
        )

    async def running(self, bus_name: str) -> None:
        """Return once busmgr counts the provider of ``bus_name`` running (a caller of the
        service may have its reply a moment before busmgr heard the name was owned)."""
        await self.manager_call("ActivateName", "s", [bus_name])

    async def instance(self, job: str) -> dict[str, Any]:
        body = await self.call(
            MANAGER_BUS_NAME,
            "GetAll",
            "s",
            ["org.busmgr.Instance1"],
            path=instance_path(job, ""),
            interface="org.freedesktop.DBus.Properties",
        )
        return {k: v.value for k, v in body[0].items()}


def job_files(directory: Path, jobs: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in jobs.items():
        (directory / f"{name}.conf").write_text(text)
    return directory


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> AsyncIterator[World]:
    top = world_dir("busmgr-sysbus-")
    activation = top / "activation" / "system-services"
    installed, daemon_only = top / "system-services", top / "daemon-only"
    service_file(installed, "org.busmgr.Test.Nobody", "nobody", "busmgr-test-nobody.service")
    service_file(installed, "org.busmgr.Test.Ghost", NO_USER, "busmgr-test-ghost.service")
    # A unit only the bus knows of (busmgr does not import this directory): the job file
    # below declares it with its `unit` stanza.
    service_file(daemon_only, "org.busmgr.Test.Unit", "root", "busmgr-test-unit.service")
    policy = shipped_policy(
        top / "policy", activation, ["org.busmgr.Manager1.conf", "busmgr-activation.conf"]
    )
    services_policy(
        policy, ["org.busmgr.Test.Nobody", "org.busmgr.Test.Ghost", "org.busmgr.Test.Unit"]
    )
    config = stock_config(
        top / "bus",
        [installed, INSTALLED, daemon_only, activation],
        [STOCK_POLICY_DIR, policy],
        top / "bus.conf",
    )
    services = job_files(
        top / "services.d",
        {
            "unitjob": (
                "dbus org.busmgr.Test.Unit\nunit busmgr-test-unit.service\n"
                f"exec {SYSTEM_PYTHON} {SYSTEM_SERVICE} org.busmgr.Test.Unit\n"
            ),
            "envdump": f"task\nexec /bin/sh -c 'env > {top}/envdump.out'\n",
        },
    )
    bus = await start_bus(config, top / "bus.log")
    args = [
        "--services-dir", str(services), "--state-dir", str(top / "state"),
        "--activation-dir", str(activation),
        "--import-dir", str(installed), "--import-dir", str(INSTALLED),
    ]  # fmt: skip
    manager = await start_manager(bus.address, args, top / "manager.log")
    assert manager.proc.returncode is None, manager.log()
    client = await MessageBus(bus_address=bus.address).connect()
    world = World(top, bus, manager, client, activation)
    try:
        yield world
    finally:
        left = psutil.Process(manager.proc.pid).children(recursive=True)
        client.disconnect()
        status = await manager.stop()
        survivors = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        for p in survivors:  # only processes this manager started
            p.kill()
        await bus.stop()
        log = manager.log()
        shutil.rmtree(top, ignore_errors=True)
        assert not survivors, f"processes left behind: {survivors}"
        assert status == 0, log
        assert "Traceback" not in log, log
        assert not loop_blocked(log), loop_blocked(log)


async def test_busmgr_owns_systemd1_under_the_stock_policy_and_the_shipped_files(
    world: World,
) -> None:
    log = world.manager.log()
    assert "D-Bus activation: activator mode (busmgr owns org.freedesktop.systemd1)" in log
    assert "Traceback" not in log


async def test_an_installed_service_runs_as_its_user_with_the_bus_environment(
    world: World,
) -> None:
    name = "org.busmgr.Test.Nobody"
    uid, gid, groups, pid = await world.call(name, "Whoami")
    assert (uid, gid) == (65534, 65534)
    assert groups == sorted(os.getgrouplist("nobody", 65534))  # the user's groups, not root's
    await world.running(name)
    props = await world.instance(name)
    assert props["State"] == "running" and props["MainPID"] == pid
    address = world.bus.address
    assert await world.call(name, "Getenv", "s", ["DBUS_SYSTEM_BUS_ADDRESS"]) == [address]
    assert await world.call(name, "Getenv", "s", ["DBUS_STARTER_ADDRESS"]) == [address]
    assert await world.call(name, "Getenv", "s", ["DBUS_STARTER_BUS_TYPE"]) == ["system"]
    # The bus asked for the unit of the installed file, and busmgr mapped it to the job.
    assert "unit='busmgr-test-nobody.service'" in world.bus.stderr.read_text()


async def test_a_unit_stanza_maps_the_unit_a_bus_asks_for(world: World) -> None:
    uid, _gid, _groups, pid = await world.call("org.busmgr.Test.Unit", "Whoami")
    assert uid == 0
    assert (await world.instance("unitjob"))["MainPID"] == pid
    assert "unit='busmgr-test-unit.service'" in world.bus.stderr.read_text()


async def test_polkitd_is_activated_through_its_installed_file(world: World) -> None:
    reply = await world.call(
        POLKIT,
        "Get",
        "ss",
        ["org.freedesktop.PolicyKit1.Authority", "BackendName"],
        path="/org/freedesktop/PolicyKit1/Authority",
        interface="org.freedesktop.DBus.Properties",
    )
    assert reply[0].value == "js"
    await world.running(POLKIT)
    props = await world.instance(POLKIT)
    assert props["State"] == "running"
    # polkitd's file says User=root; polkitd then drops to its own user.
    assert psutil.Process(props["MainPID"]).username() == "polkitd"
    await world.manager_call("StopJob", "sa{ss}b", [POLKIT, {}, True])


async def test_files_of_services_only_systemd_starts_are_skipped_with_the_reason(
    world: World,
) -> None:
    hostname = INSTALLED / "org.freedesktop.hostname1.service"
    assert hostname.exists(), "systemd (in .ci/system-deps) installs it"
    assert (
        f"{hostname}: skipped: org.freedesktop.hostname1: Exec=/bin/false: a placeholder for a "
        "service only systemd starts (SystemdService=dbus-org.freedesktop.hostname1.service)"
    ) in world.manager.log()
    rows = await world.manager_call("ListJobs")
    assert "org.freedesktop.hostname1" not in {row[0] for row in rows[0]}
    began = time.monotonic()
    with pytest.raises(DBusError) as info:
        await world.call(
            "org.freedesktop.hostname1", "Ping", path="/", interface="org.freedesktop.DBus.Peer"
        )
    assert time.monotonic() - began < PROMPT
    assert info.value.type == "org.busmgr.Error.NoProvider"
    assert "skipped org.freedesktop.hostname1: Exec=/bin/false" in info.value.text


async def test_a_user_not_created_yet_loads_with_a_warning_and_fails_clearly(
    world: World,
) -> None:
    assert f'no such user "{NO_USER}" (yet)' in world.manager.log()
    began = time.monotonic()
    with pytest.raises(DBusError) as info:
        await world.call("org.busmgr.Test.Ghost", "Whoami")
    assert time.monotonic() - began < PROMPT
    assert info.value.type == "org.busmgr.Error.JobFailed"
    assert f'setuid "{NO_USER}": no such user' in info.value.text


async def test_nobody_may_look_but_not_control(world: World) -> None:
    def busctl(*args: str) -> list[str]:
        return as_user(
            "nobody", "busctl", f"--address={world.bus.address}", "call", MANAGER_BUS_NAME,
            MANAGER_PATH, MANAGER_INTERFACE, *args,
        )  # fmt: skip

    rc, out, err = await run(*busctl("ListJobs"))
    assert rc == 0 and '"envdump"' in out, err
    for args in (("StartJob", "sa{ss}b", "envdump", "0", "true"), ("ReloadConfiguration",)):
        rc, _out, err = await run(*busctl(*args))
        assert rc != 0 and ("Access denied" in err or "AccessDenied" in err), err
    assert (await world.instance("envdump"))["State"] == "waiting"


async def test_the_activation_environment_reaches_activated_jobs_only(world: World) -> None:
    await world.call(
        "org.freedesktop.systemd1",
        "SetEnvironment",
        "as",
        [["BUSMGR_TEST_ACTIVATION=root-said"]],
        path="/org/freedesktop/systemd1",
        interface="org.freedesktop.systemd1.Manager",
    )
    await world.manager_call("StartJob", "sa{ss}b", ["envdump", {}, True])
    env = dict(
        line.split("=", 1)
        for line in (world.directory / "envdump.out").read_text().splitlines()
        if "=" in line
    )
    assert env["DBUS_SYSTEM_BUS_ADDRESS"] == world.bus.address
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert "BUSMGR_TEST_ACTIVATION" not in env  # not a bus service: not its environment
    assert "DBUS_STARTER_ADDRESS" not in env
    # A service activated from now on has it.
    await world.manager_call("StopJob", "sa{ss}b", ["unitjob", {}, True])
    got = await world.call("org.busmgr.Test.Unit", "Getenv", "s", ["BUSMGR_TEST_ACTIVATION"])
    assert got == ["root-said"]


# ------------------------------------------------------------------ refusals
async def refusing_bus(top: Path, policy_files: list[str]) -> Bus:
    """The stock policy with only ``policy_files`` of the shipped ones: no systemd, no
    system.d of the machine."""
    policy = shipped_policy(top / "policy", top / "activation", policy_files)
    config = stock_config(top / "bus", [], [policy], top / "bus.conf")
    return await start_bus(config, top / "bus.log")


async def test_a_refused_systemd1_is_one_line_and_helper_mode() -> None:
    top = world_dir("busmgr-refuse1-")
    bus = await refusing_bus(top, ["org.busmgr.Manager1.conf"])
    services = job_files(
        top / "services.d",
        {"hold": "dbus org.busmgr.Test.Hold\nexec sleep 1000\nready timeout 1\n"},
    )
    args = ["--services-dir", str(services), "--state-dir", str(top / "state"),
            "--activation-dir", str(top / "activation"), "--no-import"]  # fmt: skip
    manager = await start_manager(bus.address, args, top / "manager.log")
    try:
        assert manager.proc.returncode is None, manager.log()
        rc, out, err = await run(
            "busctl", f"--address={bus.address}", "call", MANAGER_BUS_NAME, MANAGER_PATH,
            MANAGER_INTERFACE, "ListJobs",
        )  # fmt: skip
        assert rc == 0 and '"hold"' in out, err
    finally:
        status = await manager.stop()
        await bus.stop()
    log = manager.log()
    shutil.rmtree(top, ignore_errors=True)
    assert status == 0, log
    lines = [line for line in log.splitlines() if "org.freedesktop.systemd1" in line]
    assert len(lines) == 1, log
    assert re.fullmatch(
        r"busmgr: D-Bus activation: helper mode \(cannot own org\.freedesktop\.systemd1: "
        r'Connection ":1\.\d+" is not allowed to own the service "org\.freedesktop\.systemd1" '
        r"due to security policies in the configuration file\)",
        lines[0],
    ), lines[0]
    assert "D-Bus activation: the bus does not read" in log  # no busmgr-activation.conf
    assert "Traceback" not in log
    assert not loop_blocked(log), loop_blocked(log)


async def test_a_refused_manager_name_is_one_error_and_exit_status_1() -> None:
    top = world_dir("busmgr-refuse2-")
    bus = await refusing_bus(top, [])
    (top / "none").mkdir()  # no jobs: the refusal is the one line busmgr says
    args = ["--services-dir", str(top / "none"), "--state-dir", str(top / "state"), "--no-import"]
    manager = await start_manager(bus.address, args, top / "manager.log")
    try:
        status = await asyncio.wait_for(manager.proc.wait(), TIMEOUT)
    finally:
        await manager.stop()
        await bus.stop()
    log = manager.log()
    shutil.rmtree(top, ignore_errors=True)
    assert status == 1
    (line,) = [line for line in log.splitlines() if line.startswith("busmgr: ")]
    assert re.fullmatch(
        rf"busmgr: cannot own {re.escape(MANAGER_BUS_NAME)} on {re.escape(bus.address)}: "
        rf'Connection ":1\.\d+" is not allowed to own the service '
        rf'"{re.escape(MANAGER_BUS_NAME)}" due to security policies in the configuration file',
        line,
    ), log
    assert "Traceback" not in log
