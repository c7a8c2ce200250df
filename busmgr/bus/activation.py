"""The activation bridge: D-Bus activation requests become ``dbus-activation`` events.

Two modes, chosen when the bridge starts:

* **Activator** (``org.freedesktop.systemd1`` was free, and busmgr now owns it): the bus daemon
  runs with ``--systemd-activation`` and, for service files carrying ``SystemdService=``, sends
  busmgr the directed signal ``org.freedesktop.systemd1.Activator.ActivationRequest(s unit)``.
  busmgr starts the job; the daemon delivers the caller's message once the job owns its name.
  If the job fails, busmgr sends ``ActivationFailure(unit, error, message)`` to the daemon,
  which fails every waiting caller with that error at once.
* **Helper** (a real systemd owns that name): the service files carry no ``SystemdService=``;
  their ``Exec=`` runs ``busmgr activate NAME``, which asks busmgr's ``ActivateName`` and exits
  non-zero when the job fails, so the daemon fails the callers at once.

Either way the service files busmgr writes name every bus name a job provides, and the
daemon's ``UpdateActivationEnvironment`` (a ``SetEnvironment(as)`` call to the activator) updates
the environment of later activations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dbus_fast import Message, MessageType, NameFlag, RequestNameReply
from dbus_fast.aio import MessageBus

from busmgr.bus.escape import escape
from busmgr.jobclass import JobClass

if TYPE_CHECKING:
    from busmgr.manager import Manager

log = logging.getLogger(__name__)

SYSTEMD = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
ACTIVATOR_IFACE = "org.freedesktop.systemd1.Activator"
SYSTEMD_MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_PREFIX = "busmgr-activate-"


def unit_name(bus_name: str) -> str:
    """The ``SystemdService=`` unit name busmgr uses for ``bus_name``."""
    return f"{UNIT_PREFIX}{escape(bus_name)}.service"


class ActivationBridge:
    """Owns the service files and answers the bus daemon's activation traffic."""

    def __init__(
        self, manager: Manager, bus: MessageBus, address: str, servicedir: Path | None
    ) -> None:
        self._m = manager
        self._bus = bus
        self._address = address
        self.servicedir = servicedir
        self.mode = "none"
        self._units: dict[str, str] = {}  # unit -> bus name
        self._written: set[Path] = set()
        self._pending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Choose the mode; returns it (``activator`` or ``helper``)."""
        reply = await self._bus.request_name(SYSTEMD, NameFlag.DO_NOT_QUEUE)
        if reply in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            self.mode = "activator"
        else:
            self.mode = "helper"
        self._bus.add_message_handler(self._on_message)
        return self.mode

    # ----------------------------------------------------------- service files
    def service_file_text(self, cls: JobClass) -> str:
        name = cls.dbus_name or ""
        helper = [sys.executable, "-m", "busmgr", "activate", "--address", self._address, name]
        lines = ["[D-BUS Service]", f"Name={name}", "Exec=" + shlex.join(helper)]
        if self.mode == "activator":
            lines.append(f"SystemdService={unit_name(name)}")
        return "\n".join(lines) + "\n"

    async def write_service_files(self, classes: list[JobClass]) -> None:
        """Write one file per provided bus name (and remove stale ones), then ReloadConfig."""
        if self.servicedir is None:
            return
        self.servicedir.mkdir(parents=True, exist_ok=True)
        wanted: dict[Path, str] = {}
        self._units = {}
        for cls in classes:
            if not cls.dbus_name or cls.dbus_name == SYSTEMD:
                continue
            wanted[self.servicedir / f"{cls.dbus_name}.service"] = self.service_file_text(cls)
            self._units[unit_name(cls.dbus_name)] = cls.dbus_name
        for stale in self._written - set(wanted):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        for path, text in wanted.items():
            tmp = path.with_name(path.name + ".new")
            tmp.write_text(text)
            os.replace(tmp, path)
        self._written = set(wanted)
        reply = await self._bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="ReloadConfig",
            )
        )
        if reply.message_type is MessageType.ERROR:
            log.warning("ReloadConfig failed: %s", reply.body)

    def remove_service_files(self) -> None:
        for path in self._written:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._written = set()

    # ----------------------------------------------------------- bus traffic
    def _on_message(self, msg: Message) -> Message | bool | None:
        if (
            msg.message_type is MessageType.SIGNAL
            and msg.interface == ACTIVATOR_IFACE
            and msg.member == "ActivationRequest"
            and msg.sender == "org.freedesktop.DBus"
        ):
            self._spawn(self._activate(msg.body[0]))
            return True
        if (
            msg.message_type is MessageType.METHOD_CALL
            and msg.path == SYSTEMD_PATH
            and msg.interface in (SYSTEMD_MANAGER_IFACE, None)
            and msg.member in ("SetEnvironment", "UnsetEnvironment", "UnsetAndSetEnvironment")
        ):
            return self._environment_call(msg)
        return None

    def _environment_call(self, msg: Message) -> Message | bool:
        body = list(msg.body)
        if msg.member == "SetEnvironment" and msg.signature == "as":
            self._m.update_activation_env(set_vars=body[0], unset=[])
        elif msg.member == "UnsetEnvironment" and msg.signature == "as":
            self._m.update_activation_env(set_vars=[], unset=body[0])
        elif msg.member == "UnsetAndSetEnvironment" and msg.signature == "asas":
            self._m.update_activation_env(set_vars=body[1], unset=body[0])
        else:
            return Message.new_error(
                msg,
                "org.freedesktop.DBus.Error.InvalidArgs",
                f"{msg.member} does not take ({msg.signature})",
            )
        return Message.new_method_return(msg)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _activate(self, unit: str) -> None:
        bus_name = self._units.get(unit)
        if bus_name is None:
            self._send_failure(
                unit, "org.busmgr.Error.NoProvider", f"no job provides the unit {unit}"
            )
            return
        if unit in self._pending:
            return  # the daemon merges callers; one activation serves them all
        self._pending.add(unit)
        try:
            await self._m.activate_name(bus_name)
        except Exception as err:
            name = getattr(err, "name", "JobFailed")
            self._send_failure(unit, f"org.busmgr.Error.{name}", str(getattr(err, "message", err)))
        finally:
            self._pending.discard(unit)

    def _send_failure(self, unit: str, error: str, message: str) -> None:
        if not self._bus.connected:
            return
        self._bus.send(
            Message(
                message_type=MessageType.SIGNAL,
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface=ACTIVATOR_IFACE,
                member="ActivationFailure",
                signature="sss",
                body=[unit, error, message],
            )
        )
