"""The dbus-daemon activation backend: its requests become ``dbus-activation`` events.

Two modes, chosen when the backend starts:

* **Activator** (``org.freedesktop.systemd1`` was free, and busmgr now owns it): the bus daemon
  runs with ``--systemd-activation`` and, for service files carrying ``SystemdService=``, sends
  busmgr the directed signal ``org.freedesktop.systemd1.Activator.ActivationRequest(s unit)``.
  busmgr starts the job; the daemon delivers the caller's message once the job owns its name.
  If the job fails, busmgr sends ``ActivationFailure(unit, error, message)`` to the daemon,
  which fails every waiting caller with exactly that error at once. The daemon merges
  concurrent callers into one request; busmgr merges requests that arrive while one for the
  same unit is still pending (:mod:`busmgr.bus.activation.requests`).
* **Helper** (someone else, a real systemd, owns that name): the service files carry no
  ``SystemdService=``; their ``Exec=`` runs ``busmgr activate --address ADDR NAME``, which asks
  busmgr's ``ActivateName`` and exits non-zero when the job fails, so the daemon fails the
  callers at once (with its own ``Spawn.ChildExited`` error: only the owner of
  ``org.freedesktop.systemd1`` may send ``ActivationFailure``, so the reason stays in busmgr's
  log and the helper's stderr).

Either way an activation is :meth:`busmgr.control.Control.activate_name`, the path that
``ActivateName`` takes too, and the daemon's ``UpdateActivationEnvironment`` (a no-reply
``SetEnvironment(as)`` call to the owner of ``org.freedesktop.systemd1``, so activator mode
only) updates the environment of later activations
(:meth:`busmgr.environment.Environment.update_activation`; in system mode without the variables
a caller busmgr cannot see must not set). Who may call the environment methods directly is the
caller policy's business (:mod:`busmgr.bus.auth`: on the system bus, root only).

Units: the daemon asks for the unit a service file names (``SystemdService=``). busmgr's own
files name ``busmgr-activate-<escaped name>.service``; an installed file names its package's
unit (``upower.service``), which the catalog maps to the bus name (and a job's ``unit`` stanza
too). A request for a unit of a file that was skipped (``Exec=/bin/false``) fails at once with
the reason. If the bus cannot own ``org.freedesktop.systemd1`` (its policy refuses, or a real
systemd owns it), that is said in one log line and helper mode is used; if the daemon turns out
not to read the directory the files are written to, a warning says so (activation by bus name
then cannot reach busmgr's jobs, while ``busmgr activate`` still can). On the system bus a file
carries ``User=root`` too, which the daemon's setuid launch helper requires in helper mode.

Service files: one ``NAME.service`` per bus name a job provides, in the directory the bridge
was given (the private bus's service directory, or ``$XDG_RUNTIME_DIR/dbus-1/services``, which
the daemon reads but does not watch). Invariant: a refresh writes only the files that changed
and then calls ``ReloadConfig`` exactly once, and only if something changed, so the daemon
reloads once per refresh, not once per file. A new file is written in a staging directory
beside the service directory and hard-linked into place: the daemon's inotify watch (on
``IN_CLOSE_WRITE``, ``IN_MOVED_TO``, ``IN_MOVED_FROM`` and ``IN_DELETE``, not ``IN_CREATE``)
does not fire for a link, so the explicit ``ReloadConfig`` is the one reload. Changed and
removed files (a job file edited or deleted) may add one inotify reload of their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from dbus_fast import Message, MessageFlag, MessageType

from busmgr import ERROR_PREFIX
from busmgr.bus.activation.requests import ActivationRequests, Failed
from busmgr.bus.link import DBUS, DBUS_PATH, BusLink
from busmgr.config import Skipped
from busmgr.environment import Environment
from busmgr.escape import escape
from busmgr.jobclass import JobClass
from busmgr.options import Mode

log = logging.getLogger("busmgr")

__all__ = ["ACTIVATOR", "HELPER", "SYSTEMD", "DbusDaemonActivation", "service_file_text"]

SYSTEMD = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
ACTIVATOR_IFACE = "org.freedesktop.systemd1.Activator"
SYSTEMD_MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_PREFIX = "busmgr-activate-"
MARKER = "# Written by busmgr: activation of a busmgr job. Do not edit."

ACTIVATOR = "activator"
HELPER = "helper"


def unit_name(bus_name: str) -> str:
    """The ``SystemdService=`` unit name busmgr uses for ``bus_name``."""
    return f"{UNIT_PREFIX}{escape(bus_name)}.service"


def service_file_text(bus_name: str, mode: str, address: str, *, system: bool = False) -> str:
    """The ``NAME.service`` file for ``bus_name`` in ``mode`` (``system``: for the system bus).

    Both modes need an ``Exec=`` line (dbus-daemon rejects a file without one); in activator
    mode the daemon never runs it, but the line still works if someone starts it by hand.
    """
    helper = [sys.executable, "-m", "busmgr", "activate"]
    if address:
        helper += ["--address", address]
    lines = [
        MARKER,
        "[D-BUS Service]",
        f"Name={bus_name}",
        "Exec=" + shlex.join([*helper, bus_name]),
    ]
    if system:
        lines.append("User=root")
    if mode == ACTIVATOR:
        lines.append(f"SystemdService={unit_name(bus_name)}")
    return "\n".join(lines) + "\n"


def publish_files(directory: Path, wanted: dict[str, str], previous: Iterable[str]) -> bool:
    """Make ``directory`` hold exactly ``wanted`` (file name -> text) among the files named in
    ``previous`` (those busmgr wrote before; other files are left alone). Returns whether
    anything changed. New files appear by ``link`` (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    staging = directory.parent / f".{directory.name}.busmgr-staging"
    staging.mkdir(mode=0o700, exist_ok=True)
    changed = False
    try:
        for name in set(previous) - set(wanted):
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
                changed = True
        for name, text in wanted.items():
            target = directory / name
            with contextlib.suppress(OSError):
                if target.read_text() == text:
                    continue
            staged = staging / name
            staged.write_text(text)
            try:
                os.link(staged, target)
            except FileExistsError:
                # An older version of the file: replace it atomically (this one may be seen
                # by the daemon's inotify watch; see the module docstring).
                os.replace(staged, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    staged.unlink()
            changed = True
    finally:
        with contextlib.suppress(OSError):
            staging.rmdir()
    return changed


class DbusDaemonActivation:
    """Owns the service files and answers the bus daemon's activation traffic.

    ``address`` is the bus address the helper's ``Exec=`` line uses; ``servicedir`` the
    directory for the service files (``None``: write none); ``remove_on_close`` whether
    :meth:`remove_service_files` deletes them (not needed for a private bus's directory, which
    goes away with the bus, and deleting would only make the daemon reload while it stops).
    """

    def __init__(
        self,
        link: BusLink,
        requests: ActivationRequests,
        environment: Environment,
        address: str,
        servicedir: Path | None,
        *,
        remove_on_close: bool = True,
        claim: bool = True,
    ) -> None:
        self._link = link
        self._requests = requests
        self._environment = environment
        self._address = address
        self.servicedir = servicedir
        self.remove_on_close = remove_on_close
        self.claim = claim
        self.mode = "none"
        self.system = environment.mode is Mode.SYSTEM
        self._units: dict[str, str] = {}  # unit -> bus name
        self._skipped: dict[str, str] = {}  # unit or bus name -> why no job provides it
        self._written: set[str] = set()  # file names in servicedir
        self._checked = False  # whether the daemon was seen reading servicedir

    async def start(self) -> str:
        """Choose the mode; returns it (``activator`` or ``helper``). Call once, after the
        manager owns its own name. Never fails because the name is refused: says why, in one
        line, and uses helper mode. Without ``claim`` (systemd runs the machine, and would own
        the name any moment) it does not even try."""
        if not self.claim:
            self.mode = HELPER
            log.info(
                "D-Bus activation: helper mode (%s is systemd's: it runs this machine)", SYSTEMD
            )
        elif (refused := await self._link.try_own(SYSTEMD)) is None:
            self.mode = ACTIVATOR
            log.info("D-Bus activation: activator mode (busmgr owns %s)", SYSTEMD)
        else:
            self.mode = HELPER
            log.info("D-Bus activation: helper mode (cannot own %s: %s)", SYSTEMD, refused)
        self._link.add_handler(self._on_message)
        return self.mode

    # ----------------------------------------------------------- service files
    def service_file_text(self, cls: JobClass) -> str:
        return service_file_text(cls.dbus_name or "", self.mode, self._address, system=self.system)

    async def write_service_files(
        self,
        classes: list[JobClass],
        aliases: Mapping[str, str] | None = None,
        skipped: Iterable[Skipped] = (),
    ) -> None:
        """Bring the service files in line with ``classes`` (one per provided bus name), then
        ``ReloadConfig`` once if anything changed. On return the daemon knows every name (if it
        reads ``servicedir``: :meth:`_check_daemon_reads` warns when it does not).

        ``aliases`` map further units to bus names (the catalog's: installed files' and ``unit``
        stanzas'); ``skipped`` are the installed files that make no job (their units and names
        are refused with the reason)."""
        wanted: dict[str, str] = {}
        units: dict[str, str] = dict(aliases or {})
        for cls in classes:
            if not cls.dbus_name or cls.dbus_name == SYSTEMD:
                continue
            wanted[f"{cls.dbus_name}.service"] = self.service_file_text(cls)
            units[unit_name(cls.dbus_name)] = cls.dbus_name
            units.update(dict.fromkeys(cls.units, cls.dbus_name))
        self._units = units
        self._skipped = {}
        for skip in skipped:
            for key in (skip.bus_name, *skip.units):
                if key:
                    self._skipped[key] = skip.reason
        if self.servicedir is None:
            return
        changed = publish_files(self.servicedir, wanted, self._written)
        self._written = set(wanted)
        if changed:
            await self._reload_config()
            await self._check_daemon_reads(wanted)

    async def _check_daemon_reads(self, wanted: Mapping[str, str]) -> None:
        """Warn once if the daemon knows none of the names just written: it does not read the
        service directory (the bus's configuration lacks busmgr's activation policy file)."""
        if self._checked or not wanted:
            return
        reply = await self._link.call_daemon("ListActivatableNames")
        if reply.message_type is not MessageType.METHOD_RETURN or not reply.body:
            return
        known = set(reply.body[0])
        names = [name.removesuffix(".service") for name in wanted]
        if any(name in known for name in names):
            self._checked = True
            return
        self._checked = True
        log.warning(
            "D-Bus activation: the bus does not read %s, so a client's request for a name a "
            "job provides (%s) cannot reach busmgr; `busmgr activate NAME` still works. Add "
            "busmgr's activation policy file (dbus-policy/) to the bus, or run busmgr with "
            "--launch-bus",
            self.servicedir,
            ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else ""),
        )

    async def _reload_config(self) -> None:
        reply = await self._link.call_daemon("ReloadConfig")
        if reply.message_type is MessageType.ERROR:
            log.warning("ReloadConfig failed: %s %s", reply.error_name, reply.body)

    async def refresh(
        self,
        classes: list[JobClass],
        units: Mapping[str, str],
        skipped: Iterable[Skipped],
    ) -> None:
        """The :class:`~busmgr.bus.activation.backend.ActivationBackend` refresh."""
        await self.write_service_files(classes, units, skipped)

    def close(self) -> None:
        """The :class:`~busmgr.bus.activation.backend.ActivationBackend` close."""
        self.remove_service_files()

    def remove_service_files(self) -> None:
        """Delete the files this bridge wrote (when ``remove_on_close``)."""
        if self.servicedir is not None and self.remove_on_close:
            for name in self._written:
                with contextlib.suppress(FileNotFoundError):
                    (self.servicedir / name).unlink()
        self._written = set()

    # ----------------------------------------------------------- bus traffic
    def _on_message(self, msg: Message) -> Message | bool | None:
        if (
            msg.message_type is MessageType.SIGNAL
            and msg.interface == ACTIVATOR_IFACE
            and msg.member == "ActivationRequest"
            and msg.sender == DBUS
            and msg.signature == "s"
        ):
            self._activate(msg.body[0])
            return True
        if (
            self.mode == ACTIVATOR
            and msg.message_type is MessageType.METHOD_CALL
            and msg.path == SYSTEMD_PATH
            and msg.interface in (SYSTEMD_MANAGER_IFACE, None)
            and msg.member in ("SetEnvironment", "UnsetEnvironment", "UnsetAndSetEnvironment")
        ):
            return self._environment_call(msg)
        return None

    def _environment_call(self, msg: Message) -> Message | bool:
        """systemd's environment calls; the daemon's ``UpdateActivationEnvironment`` arrives
        as ``SetEnvironment`` flagged no-reply-expected, which gets no reply. Only the caller
        policy's gate let the call get here; what the daemon forwards is not vouched for."""
        body = list(msg.body)
        env = self._environment
        vouched = msg.sender != DBUS
        refused: list[str] = []
        if msg.member == "SetEnvironment" and msg.signature == "as":
            refused = env.update_activation(set_vars=body[0], unset=[], vouched=vouched)
        elif msg.member == "UnsetEnvironment" and msg.signature == "as":
            env.update_activation(set_vars=[], unset=body[0], vouched=vouched)
        elif msg.member == "UnsetAndSetEnvironment" and msg.signature == "asas":
            refused = env.update_activation(set_vars=body[1], unset=body[0], vouched=vouched)
        else:
            reply = Message.new_error(
                msg,
                "org.freedesktop.DBus.Error.InvalidArgs",
                f"{msg.member} does not take ({msg.signature})",
            )
            return True if msg.flags & MessageFlag.NO_REPLY_EXPECTED else reply
        if refused:
            log.warning(
                "activation environment: %s not taken from UpdateActivationEnvironment: on the "
                "system bus only root may set them, with SetEnvironment on %s",
                ", ".join(sorted(refused)),
                SYSTEMD,
            )
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        return Message.new_method_return(msg)

    def _activate(self, unit: str) -> None:
        """One ``ActivationRequest``: start the job; on failure tell the daemon why."""
        bus_name = self._units.get(unit)
        if bus_name is None or unit in self._skipped:
            reason = self._skipped.get(unit)
            message = f"no busmgr job provides the unit {unit}" + (
                f" (skipped {reason})" if reason else ""
            )
            self._send_failure(unit, Failed(ERROR_PREFIX + "NoProvider", message))
            return
        self._requests.request(unit, bus_name, lambda failed: self._send_failure(unit, failed))

    def _send_failure(self, unit: str, failed: Failed) -> None:
        self._link.send(
            Message(
                message_type=MessageType.SIGNAL,
                destination=DBUS,
                path=DBUS_PATH,
                interface=ACTIVATOR_IFACE,
                member="ActivationFailure",
                signature="sss",
                body=[unit, failed.error, failed.message],
            )
        )
