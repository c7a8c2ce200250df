"""The dbus-broker activation backend: busmgr as the broker's launcher.

dbus-broker knows which names are activatable only because its launcher said so, on the
controller connection (:mod:`busmgr.bus.controller`, set up by
:mod:`busmgr.bus.broker_launch`):

* :meth:`BrokerActivation.refresh` makes the broker's activatable names exactly the bus names
  busmgr's jobs provide: ``AddName(o path, s name, u uid)`` for a new one (the uid the job
  runs as; the broker charges queued requests to it), the name object's ``Release()`` for one
  no job provides any more (the broker fails its waiting callers with ``NameReleased``).
  A name's object path is ``/org/bus1/DBus/Name/`` + the name escaped as busmgr escapes paths.
* The broker's signal ``org.bus1.DBus.Name.Activate(t serial)`` on a name's path is a request:
  :class:`~busmgr.bus.activation.requests.ActivationRequests` starts the providing job once
  (every activation is :meth:`busmgr.control.Control.activate_name`, the event
  ``dbus-activation NAME=...``). Success needs no message: the broker delivers the held calls
  when the job owns its name. Failure — the job exits or is killed before owning it, is not
  ready within its ``ready timeout``, is refused, or no job provides the name any more — is
  ``Reset(serial, error)`` at once: the broker has no activation timeout of its own, so
  without the Reset its callers would wait for their own method-call timeout. The serial is
  the latest ``Activate`` of the name (stale serials are ignored by the broker, so a Reset
  never fails a later request by mistake).
* ``org.bus1.DBus.Broker.SetActivationEnvironment(a{ss})`` (a client called
  ``UpdateActivationEnvironment``) updates the environment of later activations.
* The broker's method call ``org.bus1.DBus.Controller.ReloadConfig()`` (a client called
  ``org.freedesktop.DBus.ReloadConfig``) reloads the job files, as ``ReloadConfiguration`` and
  SIGHUP do, and the reply comes once the broker knows the new names. It is ``()`` whenever
  the reload ran, as ``ReloadConfiguration`` succeeds: a broken file is logged with its line
  and keeps its previous definition while the others apply. The broker tells its client
  ``InvalidConfig`` as "Config invalid. Reload ignored.", which would be untrue of such a
  reload, so that error is the answer only when the reload could not run at all (a bug,
  reported as one).

The broker's callers learn only the broker's own words for a failure
(``org.freedesktop.DBus.Error.NameHasNoOwner: Could not activate remote peer: unit failed``):
``Reset`` takes one of eight fixed error names and no text. busmgr's reason (which process
failed, its exit status, its last output) is in busmgr's log, and ``ActivateName`` callers get
it in full.

Protocol exactness (any mistake shuts the broker's bus down): this backend sends only
``AddName``, ``Release``, ``Reset`` with a name from :data:`RESET_ERRORS`, and exactly one
reply to each ``ReloadConfig``, ``()`` or ``InvalidConfig``; it never sends a signal and never
answers a call it does not know (the controller connection enforces the rest).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
from collections.abc import Awaitable, Callable, Iterable, Mapping

from dbus_fast import Message, MessageType

from busmgr import ERROR_PREFIX, MANAGER_BUS_NAME
from busmgr.bus.activation.requests import ActivationRequests, Failed
from busmgr.bus.controller import ControllerConnection, ControllerError
from busmgr.config import Skipped
from busmgr.environment import Environment
from busmgr.escape import escape
from busmgr.jobclass import JobClass

log = logging.getLogger("busmgr")

__all__ = ["BROKER", "RESET_ERRORS", "BrokerActivation", "name_path", "reset_error"]

BROKER = "broker"
BROKER_PATH = "/org/bus1/DBus/Broker"
BROKER_IFACE = "org.bus1.DBus.Broker"
NAME_PREFIX = "/org/bus1/DBus/Name/"
NAME_IFACE = "org.bus1.DBus.Name"
CONTROLLER_PATH = "/org/bus1/DBus/Controller"
CONTROLLER_IFACE = "org.bus1.DBus.Controller"
INVALID_CONFIG = "org.bus1.DBus.Controller.Error.InvalidConfig"

_NAME_ERROR = "org.bus1.DBus.Name.Error."
UNIT_FAILURE = _NAME_ERROR + "UnitFailure"
#: busmgr's error name of a failed activation -> the broker's ``Reset`` error (the only names
#: the broker accepts; anything else would end the bus).
RESET_ERRORS = {
    ERROR_PREFIX + "NoProvider": _NAME_ERROR + "UnknownUnit",
    ERROR_PREFIX + "InvalidArgs": _NAME_ERROR + "InvalidUnit",
    ERROR_PREFIX + "JobFailed": UNIT_FAILURE,
    ERROR_PREFIX + "AlreadyStopped": UNIT_FAILURE,
}
#: Names the broker never makes activatable: the manager's own, and the bus's.
RESERVED = frozenset({MANAGER_BUS_NAME, "org.freedesktop.DBus"})


def name_path(bus_name: str) -> str:
    """The object path of ``bus_name``'s name object on the controller."""
    return NAME_PREFIX + escape(bus_name)


def reset_error(failed: Failed) -> str:
    """The ``Reset`` error for a failure (``UnitFailure`` for any not in the table)."""
    return RESET_ERRORS.get(failed.error, UNIT_FAILURE)


def _uid_of(cls: JobClass, default: int, cache: dict[str, int | None]) -> int:
    """The uid ``cls`` runs as: its ``setuid`` user, else ``default``."""
    user = cls.context.setuid
    if not user:
        return default
    if user not in cache:
        try:
            cache[user] = pwd.getpwnam(user).pw_uid
        except KeyError:
            cache[user] = None  # the job fails at spawn with the reason; charge the manager
    uid = cache[user]
    return default if uid is None else uid


class BrokerActivation:
    """Answers dbus-broker's activation traffic on the controller connection.

    ``reload`` reloads the job files (and refreshes this backend's names); its result is
    not used."""

    mode = BROKER

    def __init__(
        self,
        controller: ControllerConnection,
        requests: ActivationRequests,
        environment: Environment,
        reload: Callable[[], Awaitable[object]],
    ) -> None:
        self._controller = controller
        self._requests = requests
        self._environment = environment
        self._reload = reload
        self._uid = os.getuid()
        self._users: dict[str, int | None] = {}
        self._names: dict[str, int] = {}  # bus name -> uid it was added with
        self._by_path: dict[str, str] = {}  # name path -> bus name
        self._serials: dict[str, int] = {}  # bus name -> latest Activate serial
        self._refreshing = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._controller.attach(self._on_signal, self._on_call)
        log.info("D-Bus activation: broker mode (busmgr is dbus-broker's launcher)")
        return self.mode

    # ------------------------------------------------------------------ names
    async def refresh(
        self,
        classes: list[JobClass],
        units: Mapping[str, str] | None = None,
        skipped: Iterable[Skipped] = (),
    ) -> None:
        """Add the provided names the broker does not know, release those no job provides;
        on return the broker knows exactly the provided names (a name it refused is logged).
        The broker asks for names, never units: ``units`` and ``skipped`` play no part."""
        wanted: dict[str, int] = {}
        for cls in classes:
            name = cls.dbus_name
            if name and name not in RESERVED and name not in wanted:
                wanted[name] = _uid_of(cls, self._uid, self._users)
        async with self._refreshing:
            for name, uid in list(self._names.items()):
                if wanted.get(name) != uid:
                    await self._release(name)
            for name, uid in wanted.items():
                if name not in self._names:
                    await self._add(name, uid)

    async def _add(self, name: str, uid: int) -> None:
        path = name_path(name)
        try:
            await self._controller.call(
                BROKER_PATH, BROKER_IFACE, "AddName", "osu", [path, name, uid]
            )
        except ControllerError as err:
            log.warning("dbus-broker will not activate %s: %s", name, err)
            return
        self._names[name] = uid
        self._by_path[path] = name

    async def _release(self, name: str) -> None:
        path = name_path(name)
        self._names.pop(name, None)
        self._by_path.pop(path, None)
        self._serials.pop(name, None)
        try:
            await self._controller.call(path, NAME_IFACE, "Release")
        except ControllerError as err:
            log.warning("dbus-broker did not release %s: %s", name, err)

    def close(self) -> None:
        """Nothing outlives the manager here: the broker forgets every name when the
        controller closes. Pending Resets are dropped with it."""
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ from the broker
    def _on_signal(self, msg: Message) -> None:
        if msg.member == "Activate" and msg.interface == NAME_IFACE and msg.signature == "t":
            name = self._by_path.get(msg.path or "")
            if name is None:
                log.warning("dbus-broker asked to activate %s, which busmgr never added", msg.path)
                return
            self._serials[name] = msg.body[0]
            self._requests.request(name, name, lambda failed: self._reset(name, failed))
        elif (
            msg.member == "SetActivationEnvironment"
            and msg.interface == BROKER_IFACE
            and msg.signature == "a{ss}"
        ):
            env: dict[str, str] = msg.body[0]
            self._environment.update_activation([f"{k}={v}" for k, v in env.items()], [])
        else:
            log.warning("dbus-broker sent an unknown signal %s.%s", msg.interface, msg.member)

    def _reset(self, name: str, failed: Failed) -> None:
        """Fail the broker's callers waiting for ``name`` (the latest request's serial)."""
        serial = self._serials.pop(name, None)
        if serial is None or name not in self._names:
            return  # released meanwhile: the broker failed its callers then
        task = asyncio.get_running_loop().create_task(
            self._send_reset(name, serial, reset_error(failed))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_reset(self, name: str, serial: int, error: str) -> None:
        try:
            await self._controller.call(name_path(name), NAME_IFACE, "Reset", "ts", [serial, error])
        except ControllerError as err:
            log.warning("dbus-broker did not take the failure of %s: %s", name, err)

    async def _on_call(self, call: Message) -> Message | None:
        if (
            call.path == CONTROLLER_PATH
            and call.interface in (CONTROLLER_IFACE, None)
            and call.member == "ReloadConfig"
            and call.signature == ""
        ):
            return await self._reload_config(call)
        # Any answer the broker does not expect ends its bus: leave it unanswered.
        log.error(
            "dbus-broker called %s.%s on %s, which busmgr does not know; not answered",
            call.interface,
            call.member,
            call.path,
        )
        return None

    async def _reload_config(self, call: Message) -> Message:
        valid = True
        try:
            await self._reload()
        except Exception as err:
            # A bug: the loop's handler reports it (and stops the manager); the broker still
            # gets its one answer, or the client's call would hang until its timeout.
            asyncio.get_running_loop().call_exception_handler(
                {"message": "reloading for dbus-broker's ReloadConfig", "exception": err}
            )
            valid = False
        if valid:
            return Message(message_type=MessageType.METHOD_RETURN, reply_serial=call.serial)
        return Message(
            message_type=MessageType.ERROR,
            reply_serial=call.serial,
            error_name=INVALID_CONFIG,
            signature="s",
            body=["busmgr could not reload; see its log"],
        )
