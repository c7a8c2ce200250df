"""System mode (``busmgr daemon --system``): the manager itself checks each caller's uid, for
every method of every name it owns, so on the system bus only root may change anything while
anyone may look (SPEC §4, issue 10 item 6).

The bus here lets everyone send anything (no policy file stands in the way), so every call
reaches the manager and every refusal seen is the manager's own. A client run as ``nobody``
(``setpriv``, then ``helpers/every_method.py`` on the system's python) tries every method of
every object the manager exports, under both names it owns (``org.busmgr.Manager1``, and
``org.freedesktop.systemd1`` in activator mode, whose ``SetEnvironment`` would change what
root's jobs run), and changes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from dbus_fast.aio import MessageBus

from busmgr import MANAGER_BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH
from busmgr.bus.auth import OPEN_METHODS

from conftest import HELPERS, call_method
from sysbus import (
    SYSTEM_PYTHON,
    SYSTEM_SERVICE,
    Bus,
    Manager,
    as_user,
    loop_blocked,
    run,
    start_bus,
    start_manager,
    world_dir,
)

pytestmark = pytest.mark.integration

if os.geteuid() != 0:
    pytest.skip(
        "system mode tests run clients as other users: they need root", allow_module_level=True
    )

CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <servicedir>{activation}</servicedir>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

SYSTEMD = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
SYSTEMD_MANAGER = "org.freedesktop.systemd1.Manager"
ENVY = "org.busmgr.Test.Envy"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class System:
    directory: Path
    bus: Bus
    manager: Manager
    client: MessageBus

    @property
    def address(self) -> str:
        return self.bus.address

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        destination: str = MANAGER_BUS_NAME,
        path: str = MANAGER_PATH,
        interface: str = MANAGER_INTERFACE,
    ) -> list[Any]:
        return await call_method(self.client, destination, path, interface, member, signature, body)

    async def getenv(self, key: str) -> str:
        body = await self.call(
            "Getenv",
            "s",
            [key],
            destination=ENVY,
            path="/org/busmgr/Test",
            interface="org.busmgr.Test",
        )
        return str(body[0])

    async def restart_envy(self) -> None:
        """Stop the activated service, so that the next call activates it afresh."""
        await self.call("StopJob", "sa{ss}b", ["envy", {}, True])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system() -> AsyncIterator[System]:
    directory = world_dir("busmgr-system-")
    activation = directory / "activation"
    config = CONFIG.format(socket=directory / "bus", activation=activation)
    (directory / "bus.conf").write_text(config)
    bus = await start_bus(directory / "bus.conf", directory / "bus.log")
    services = directory / "services.d"
    services.mkdir()
    (services / "web.conf").write_text("exec sleep 1000\n")
    (services / "loose.conf").write_text("exec sleep 1000\n")
    (services / "loose.conf").chmod(0o666)  # anyone could make root run anything
    (services / "envy.conf").write_text(
        f"dbus {ENVY}\nexec {SYSTEM_PYTHON} {SYSTEM_SERVICE} {ENVY}\n"
    )
    args = [
        "--services-dir", str(services), "--state-dir", str(directory / "state"),
        "--activation-dir", str(activation), "--no-import",
    ]  # fmt: skip
    manager = await start_manager(bus.address, args, directory / "manager.log")
    assert manager.proc.returncode is None, manager.log()
    client = await MessageBus(bus_address=bus.address).connect()
    try:
        yield System(directory, bus, manager, client)
    finally:
        client.disconnect()
        status = await manager.stop()
        await bus.stop()
        log = manager.log()
        shutil.rmtree(directory, ignore_errors=True)
        assert status == 0, log
        assert "loose.conf: refused in system mode:" in log
        assert "writable by group or others (mode 666)" in log
        assert not loop_blocked(log), loop_blocked(log)


def busctl(address: str, *args: str, user: str | None = None) -> list[str]:
    argv = ["busctl", f"--address={address}", "call", MANAGER_BUS_NAME, MANAGER_PATH,
            MANAGER_INTERFACE, *args]  # fmt: skip
    return as_user(user, *argv) if user is not None else argv


async def test_only_root_may_control_jobs_but_anyone_may_look(system: System) -> None:
    address = system.address
    rc, out, err = await run(
        *busctl(address, "StartJob", "sa{ss}b", "web", "0", "true", user="nobody")
    )
    assert rc != 0
    assert "only root may control busmgr" in err and "uid 65534" in err
    rc, out, err = await run(*busctl(address, "ListJobs", user="nobody"))
    assert rc == 0 and '"web" "" "waiting"' in out, err
    rc, out, err = await run(*busctl(address, "StartJob", "sa{ss}b", "web", "0", "true"))
    assert rc == 0, err
    rc, out, err = await run(
        *busctl(address, "StopJob", "sa{ss}b", "web", "0", "true", user="nobody")
    )
    assert rc != 0 and "only root" in err
    rc, out, err = await run(*busctl(address, "StopJob", "sa{ss}b", "web", "0", "true"))
    assert rc == 0, err


async def test_access_denied_error_name(system: System) -> None:
    rc, _out, err = await run(
        *as_user(
            "nobody",
            "dbus-send",
            f"--bus={system.address}",
            "--print-reply",
            f"--dest={MANAGER_BUS_NAME}",
            "/org/busmgr/Manager1",
            "org.busmgr.Manager1.EmitEvent",
            "string:x",
            "dict:string:string:",
            "boolean:true",
        )
    )
    assert rc != 0 and "org.busmgr.Error.AccessDenied" in err


async def test_a_job_file_others_may_write_is_refused(system: System) -> None:
    rc, out, err = await run(*busctl(system.address, "ListJobs"))
    assert rc == 0, err
    assert '"web"' in out and '"loose"' not in out


# ------------------------------------------------------------ every method, as nobody
async def test_nobody_can_call_no_method_that_changes_anything(system: System) -> None:
    await system.call("StartJob", "sa{ss}b", ["web", {}, True])  # an instance object exists
    also = [
        ["--also", SYSTEMD, SYSTEMD_PATH, SYSTEMD_MANAGER, member, signature]
        for member, signature in (
            ("SetEnvironment", "as"),
            ("UnsetEnvironment", "as"),
            ("UnsetAndSetEnvironment", "asas"),
        )
    ]
    argv = [SYSTEM_PYTHON, str(HELPERS / "every_method.py"), system.address,
            MANAGER_BUS_NAME, SYSTEMD, *(w for a in also for w in a)]  # fmt: skip
    rc, out, err = await run(*as_user("nobody", *argv))
    assert rc == 0, err
    calls = [json.loads(line) for line in out.splitlines()]
    seen = {(c["interface"], c["member"]) for c in calls}
    assert {(MANAGER_INTERFACE, "StartJob"), ("org.busmgr.Job1", "Start"),
            ("org.freedesktop.DBus.Properties", "Set")} <= seen  # fmt: skip
    assert {c["dest"] for c in calls} == {MANAGER_BUS_NAME, SYSTEMD}
    assert any(c["path"].count("/") == 6 for c in calls)  # an instance object, too
    for c in calls:
        denied = c["error"] == "org.busmgr.Error.AccessDenied"
        if (c["interface"], c["member"]) in OPEN_METHODS:
            assert not denied, c
        else:
            assert denied and "(uid 65534)" in c["message"], c
    # Nothing changed: the jobs are where root left them, and the manager still runs.
    rows = {(r[0], r[2]) for r in (await system.call("ListJobs"))[0]}
    assert ("web", "running") in rows and ("envy", "waiting") in rows
    assert system.manager.proc.returncode is None
    await system.call("StopJob", "sa{ss}b", ["web", {}, True])


async def test_nobody_cannot_change_what_root_jobs_run(system: System) -> None:
    rc, _out, err = await run(
        *as_user(
            "nobody",
            "busctl",
            f"--address={system.address}",
            "call",
            SYSTEMD,
            SYSTEMD_PATH,
            SYSTEMD_MANAGER,
            "SetEnvironment",
            "as",
            "2",
            "PATH=/tmp/evil",
            "BUSMGR_EVIL=1",
        )
    )
    assert rc != 0 and "only root may control busmgr" in err
    # The bus daemon itself refuses UpdateActivationEnvironment to anyone but root.
    rc, _out, err = await run(
        *as_user(
            "nobody",
            "busctl",
            f"--address={system.address}",
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "UpdateActivationEnvironment",
            "a{ss}",
            "1",
            "BUSMGR_EVIL",
            "1",
        )
    )
    assert rc != 0, err
    assert await system.getenv("PATH") == DEFAULT_PATH
    assert await system.getenv("BUSMGR_EVIL") == ""
    await system.restart_envy()


async def test_what_the_bus_forwards_never_sets_loader_variables(system: System) -> None:
    await system.call(
        "UpdateActivationEnvironment",
        "a{ss}",
        [{"PATH": "/tmp/evil", "LD_PRELOAD": "/tmp/evil.so", "FORWARDED_BY_THE_BUS": "yes"}],
        destination="org.freedesktop.DBus",
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
    )
    # Root may set anything directly on org.freedesktop.systemd1.
    await system.call(
        "SetEnvironment", "as", [["SET_BY_ROOT=direct"]],
        destination=SYSTEMD, path=SYSTEMD_PATH, interface=SYSTEMD_MANAGER,
    )  # fmt: skip
    assert await system.getenv("FORWARDED_BY_THE_BUS") == "yes"
    assert await system.getenv("SET_BY_ROOT") == "direct"
    assert await system.getenv("PATH") == DEFAULT_PATH
    assert await system.getenv("LD_PRELOAD") == ""
    assert (
        "activation environment: LD_PRELOAD, PATH not taken from UpdateActivationEnvironment"
        in system.manager.log()
    )
    await system.restart_envy()
