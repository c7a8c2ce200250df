"""The client side of the bus API: which bus to use, connecting to it, and typed manager calls.

This module is what ``busmgr``'s client verbs (and tests, and any Python caller) use to talk to a
running manager. It holds no presentation and no lifecycle logic: every method is one or a few
D-Bus calls whose names and signatures are fixed by SPEC §3.

Bus selection (:func:`resolve_address`) is a pure function of the options and the environment, in
this order: ``--address``, ``--session``, ``--system``, ``$BUSMGR_ADDRESS``,
``$DBUS_SESSION_BUS_ADDRESS``. As the D-Bus specification says, ``$DBUS_SYSTEM_BUS_ADDRESS``
overrides the system bus's well-known address.

Calls go through the low-level message API rather than introspected proxies: one round trip per
call, and a manager that is half-written still gets clear error replies. Every call carries a
client-side timeout, except the calls that wait for jobs (``wait=True``, ``ActivateName``): those
last as long as the jobs take, which only the manager's own ``ready timeout`` bounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from busmgr import (
    INSTANCE_INTERFACE,
    JOB_INTERFACE,
    MANAGER_BUS_NAME,
    MANAGER_INTERFACE,
    MANAGER_PATH,
)
from busmgr.bus.link import ConnectError, connect, describe_address
from busmgr.escape import unescape as unescape_path_element
from busmgr.options import (
    DEFAULT_SYSTEM_BUS_ADDRESS,
    session_bus_address,
    system_bus_address,
)

__all__ = [
    "CALL_TIMEOUT",
    "DEFAULT_SYSTEM_BUS_ADDRESS",
    "BusSelectionError",
    "ConnectError",
    "InstanceInfo",
    "JobRow",
    "ManagerClient",
    "call",
    "connect",
    "describe_address",
    "error_from_reply",
    "is_job_path",
    "job_path_of",
    "resolve_address",
    "unescape_path_element",
    "unwrap",
]

#: Seconds to wait for the reply to a call that does not wait for jobs. Generous: a manager busy
#: reloading hundreds of job files still answers well within it.
CALL_TIMEOUT = 120.0

JOB_PATH_PREFIX = MANAGER_PATH + "/job/"

DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"

#: Error names meaning "the object is gone": an instance of an ``instance`` job disappears once
#: stopped, possibly between ``ListJobs`` and the next call.
GONE_ERRORS = frozenset(
    {
        "org.freedesktop.DBus.Error.UnknownObject",
        "org.freedesktop.DBus.Error.UnknownInterface",
        "org.freedesktop.DBus.Error.UnknownMethod",
        "org.busmgr.Error.UnknownInstance",
        "org.busmgr.Error.UnknownJob",
    }
)

#: The manager's signals and their body signatures.
MANAGER_SIGNALS: Mapping[str, str] = {
    "JobStarting": "ssa{ss}",
    "JobStarted": "ssa{ss}",
    "JobStopping": "ssa{ss}",
    "JobStopped": "ssa{ss}",
    "EventEmitted": "sa{ss}",
}


class BusSelectionError(ValueError):
    """More than one of ``--address``, ``--session`` and ``--system`` was given."""


def resolve_address(
    args_address: str | None, session: bool, system: bool, environ: Mapping[str, str]
) -> str | BusType:
    """The bus a client should use.

    Returns an address string, or :attr:`BusType.SESSION` when the session bus is asked for (or
    nothing is) but ``$DBUS_SESSION_BUS_ADDRESS`` is unset, leaving dbus-fast's own fallback to
    find it (or fail). Raises :class:`BusSelectionError` if more than one option is given.
    """
    chosen = sum((args_address is not None, session, system))
    if chosen > 1:
        raise BusSelectionError("--address, --session and --system are mutually exclusive")
    if args_address is not None:
        return args_address
    if system:
        return system_bus_address(environ)
    if not session and environ.get("BUSMGR_ADDRESS"):
        return environ["BUSMGR_ADDRESS"]
    return session_bus_address(environ) or BusType.SESSION


def error_from_reply(reply: Message) -> DBusError:
    """The :class:`DBusError` an error reply carries (its text may be missing from the body)."""
    text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
    return DBusError(reply.error_name or "org.freedesktop.DBus.Error.Failed", text, reply=reply)


async def call(
    bus: MessageBus,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: Iterable[Any] = (),
    *,
    destination: str = MANAGER_BUS_NAME,
    timeout: float | None = CALL_TIMEOUT,
) -> list[Any]:
    """Call one method and return the reply's body.

    Raises :class:`DBusError` on an error reply and :class:`TimeoutError` if no reply came within
    ``timeout`` seconds (``None``: wait as long as it takes).
    """
    message = Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=list(body),
    )
    async with asyncio.timeout(timeout):
        reply = await bus.call(message)
    if reply is None:  # only for NO_REPLY_EXPECTED, which we never set
        return []
    if reply.message_type == MessageType.ERROR:
        raise error_from_reply(reply)
    return list(reply.body)


def unwrap(value: Any) -> Any:
    """``value`` without its :class:`Variant` wrappers, recursively."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def is_job_path(path: str) -> bool:
    """Whether ``path`` is a job object (as opposed to one of its instances)."""
    return path.startswith(JOB_PATH_PREFIX) and "/" not in path[len(JOB_PATH_PREFIX) :]


def job_path_of(path: str) -> str:
    """The job object's path for an instance path (a job path is returned unchanged)."""
    if is_job_path(path):
        return path
    return path.rsplit("/", 1)[0]


@dataclass(frozen=True)
class JobRow:
    """One row of ``ListJobs``: a job instance, or the placeholder of an ``instance`` job that
    has none (``instance == ""``, ``state == "waiting"``, ``path`` the job's own path)."""

    job: str
    instance: str
    state: str
    path: str


@dataclass(frozen=True)
class InstanceInfo:
    """What ``list`` and ``status`` show of one instance; ``source`` is ``""`` if unknown."""

    job: str
    instance: str
    goal: str
    state: str
    main_pid: int
    bus_name: str
    source: str
    path: str


class ManagerClient:
    """Typed calls to the manager at ``org.busmgr.Manager1`` on ``bus``.

    Methods raise :class:`DBusError` for error replies (``.type`` the error name, ``.text`` the
    message) and :class:`TimeoutError` when a non-waiting call gets no reply in time.
    """

    def __init__(self, bus: MessageBus, timeout: float | None = CALL_TIMEOUT) -> None:
        self.bus = bus
        self.timeout = timeout

    async def _manager(
        self, member: str, signature: str = "", body: Iterable[Any] = (), wait: bool = False
    ) -> list[Any]:
        return await call(
            self.bus,
            MANAGER_PATH,
            MANAGER_INTERFACE,
            member,
            signature,
            body,
            timeout=None if wait else self.timeout,
        )

    async def list_jobs(self) -> list[JobRow]:
        (rows,) = await self._manager("ListJobs")
        return [JobRow(str(j), str(i), str(s), str(p)) for j, i, s, p in rows]

    async def get_job(self, job: str) -> str:
        (path,) = await self._manager("GetJob", "s", [job])
        return str(path)

    async def start_job(self, job: str, env: Mapping[str, str], wait: bool) -> str:
        (path,) = await self._manager("StartJob", "sa{ss}b", [job, dict(env), wait], wait)
        return str(path)

    async def stop_job(self, job: str, env: Mapping[str, str], wait: bool) -> None:
        await self._manager("StopJob", "sa{ss}b", [job, dict(env), wait], wait)

    async def restart_job(self, job: str, env: Mapping[str, str], wait: bool) -> str:
        (path,) = await self._manager("RestartJob", "sa{ss}b", [job, dict(env), wait], wait)
        return str(path)

    async def reload_job(self, job: str, env: Mapping[str, str]) -> None:
        await self._manager("ReloadJob", "sa{ss}", [job, dict(env)])

    async def emit_event(self, name: str, env: Mapping[str, str], wait: bool) -> None:
        await self._manager("EmitEvent", "sa{ss}b", [name, dict(env), wait], wait)

    async def activate_name(self, bus_name: str) -> str:
        # Returns once the name has an owner: as long as the job takes to be ready.
        (path,) = await self._manager("ActivateName", "s", [bus_name], wait=True)
        return str(path)

    async def reload_configuration(self) -> None:
        await self._manager("ReloadConfiguration")

    async def reexec(self) -> None:
        # Returns once the state is saved; the manager then execs (it may wait for jobs first).
        await self._manager("Reexec", wait=True)

    async def list_skipped(self) -> list[tuple[str, str, str]]:
        """``(job, source, reason)`` of each entry that is not a job; none from a manager that
        does not know ``ListSkipped``."""
        try:
            (rows,) = await self._manager("ListSkipped")
        except DBusError as e:
            if e.type == "org.freedesktop.DBus.Error.UnknownMethod":
                return []
            raise
        return [(str(j), str(s), str(r)) for j, s, r in rows]

    async def set_env(self, name: str, value: str) -> None:
        await self._manager("SetEnv", "ss", [name, value])

    async def unset_env(self, name: str) -> None:
        await self._manager("UnsetEnv", "s", [name])

    async def get_env(self, name: str) -> str:
        (value,) = await self._manager("GetEnv", "s", [name])
        return str(value)

    async def list_env(self) -> dict[str, str]:
        (env,) = await self._manager("ListEnv")
        return {str(k): str(v) for k, v in env.items()}

    async def end_session(self, wait: bool) -> None:
        """``EndSession``; with ``wait``, return only once the manager is gone (it released
        its name, or the bus itself went away with a private session)."""
        if not wait:
            await self._manager("EndSession")
            return
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def handler(message: Message) -> None:
            if (
                message.message_type == MessageType.SIGNAL
                and message.member == "NameOwnerChanged"
                and message.signature == "sss"
                and message.body[0] == MANAGER_BUS_NAME
                and not message.body[2]
                and not gone.done()
            ):
                gone.set_result(None)

        self.bus.add_message_handler(handler)
        rule = (
            f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',"
            f"member='NameOwnerChanged',arg0='{MANAGER_BUS_NAME}'"
        )
        await call(self.bus, DBUS_PATH, DBUS_NAME, "AddMatch", "s", [rule], destination=DBUS_NAME)
        try:
            await self._manager("EndSession", wait=True)
        except (EOFError, ConnectionError):
            return  # the private bus went away with the session: it is over
        except DBusError as e:
            if e.type != "org.freedesktop.DBus.Error.NoReply":
                raise
            return  # the manager left before it could reply: the session is over
        # Shielded: cancelling this wait must not cancel the bus's own disconnect future.
        disconnected = asyncio.shield(self.bus.wait_for_disconnect())
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.wait({gone, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnected.cancel()
            if disconnected.done() and not disconnected.cancelled():
                disconnected.exception()  # the bus going away is how a private session ends

    async def get_all(self, path: str, interface: str) -> dict[str, Any]:
        """All properties of ``interface`` at ``path``, unwrapped from their variants."""
        (props,) = await call(
            self.bus,
            path,
            PROPERTIES_INTERFACE,
            "GetAll",
            "s",
            [interface],
            timeout=self.timeout,
        )
        return {str(k): unwrap(v) for k, v in props.items()}

    async def _get_all_or_none(self, path: str, interface: str) -> dict[str, Any] | None:
        try:
            return await self.get_all(path, interface)
        except DBusError as e:
            if e.type in GONE_ERRORS:
                return None
            raise

    async def describe(self, rows: Iterable[JobRow], sources: bool = True) -> list[InstanceInfo]:
        """The goal, state, pid, bus name and (if ``sources``) source file of each row.

        Properties are read concurrently. An instance that vanished since ``ListJobs`` is shown
        as ``stop/waiting``, which is what it became; a job path row is ``stop/waiting`` too.
        """
        rows = list(rows)
        job_paths = sorted({job_path_of(r.path) for r in rows if sources or is_job_path(r.path)})
        instance_paths = [r.path for r in rows if not is_job_path(r.path)]
        results = await asyncio.gather(
            *(self._get_all_or_none(p, JOB_INTERFACE) for p in job_paths),
            *(self._get_all_or_none(p, INSTANCE_INTERFACE) for p in instance_paths),
        )
        jobs = dict(zip(job_paths, results[: len(job_paths)], strict=True))
        instances = dict(zip(instance_paths, results[len(job_paths) :], strict=True))

        infos = []
        for row in rows:
            job_props = jobs.get(job_path_of(row.path)) or {}
            if is_job_path(row.path):
                props: dict[str, Any] = {"Goal": "stop", "State": row.state, "MainPID": 0}
                props["BusName"] = job_props.get("BusName", "")
            else:
                props = instances[row.path] or {"Goal": "stop", "State": "waiting", "MainPID": 0}
            infos.append(
                InstanceInfo(
                    job=str(props.get("Job", row.job)),
                    instance=str(props.get("Instance", row.instance)),
                    goal=str(props.get("Goal", "")),
                    state=str(props.get("State", row.state)),
                    main_pid=int(props.get("MainPID", 0)),
                    bus_name=str(props.get("BusName", "")),
                    source=str(job_props.get("Source", "")),
                    path=row.path,
                )
            )
        return infos

    async def describe_path(self, path: str) -> InstanceInfo:
        """:meth:`describe` for the instance at ``path`` (as ``StartJob`` returns), named by its
        ``Job`` and ``Instance`` properties, or by its path if it is already gone."""
        job_path = job_path_of(path)
        job = unescape_path_element(job_path[len(JOB_PATH_PREFIX) :])
        instance = "" if path == job_path else unescape_path_element(path.rsplit("/", 1)[1])
        (info,) = await self.describe([JobRow(job, instance, "waiting", path)], sources=False)
        return info

    async def subscribe(self, callback: Callable[[str, list[Any]], None]) -> None:
        """Call ``callback(member, body)`` for each manager signal from now on.

        The match rule names the manager's well-known name as sender, so the bus daemon keeps
        delivering a new owner's signals after the manager restarts. On return the rule is in
        place: every signal emitted after this returns reaches ``callback``.
        """

        def handler(message: Message) -> None:
            if (
                message.message_type == MessageType.SIGNAL
                and message.path == MANAGER_PATH
                and message.interface == MANAGER_INTERFACE
                and MANAGER_SIGNALS.get(message.member or "") == message.signature
            ):
                callback(str(message.member), list(message.body))

        self.bus.add_message_handler(handler)
        rule = (
            f"type='signal',sender='{MANAGER_BUS_NAME}',"
            f"path='{MANAGER_PATH}',interface='{MANAGER_INTERFACE}'"
        )
        await call(
            self.bus,
            DBUS_PATH,
            DBUS_NAME,
            "AddMatch",
            "s",
            [rule],
            destination=DBUS_NAME,
            timeout=self.timeout,
        )
