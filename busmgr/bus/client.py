"""The client side of the bus API: which bus to use, connecting to it, and typed manager calls.

This module is what ``busmgr``'s client verbs (and tests, and any Python caller) use to talk to a
running manager. It holds no presentation and no lifecycle logic: every method is one or a few
D-Bus calls whose names and signatures are fixed by SPEC §3.

Bus selection (:func:`resolve_address`) is a pure function of the options and the environment, in
this order: ``--address``, ``--session``, ``--system``, ``$BUSMGR_ADDRESS``,
``$DBUS_SESSION_BUS_ADDRESS``, then ``$XDG_RUNTIME_DIR/bus`` (where a user's systemd keeps the
session bus, as sd-bus looks for it). As the D-Bus specification says,
``$DBUS_SYSTEM_BUS_ADDRESS`` overrides the system bus's well-known address.

Two transports, one :class:`ManagerClient`: its methods are coroutines over either

* a :class:`~busmgr.bus.wire.BlockingBus` (:func:`connect_blocking`): the command line's fast
  path. Nothing ever suspends, so a verb's coroutine runs to its end in one
  ``coroutine.send(None)`` (:func:`run_blocking`) without asyncio, which a one-call command
  line would pay more for than for the call itself;
* a dbus-fast ``MessageBus`` (:func:`connect`), for callers on an event loop.

Both raise :class:`ErrorReply` for an error reply (``.type`` the error name, ``.text`` the
message), :class:`TimeoutError` when a non-waiting call gets no reply in time, and
:class:`EOFError` when the bus goes away. Calls go through the low-level message API rather than
introspected proxies: one round trip per call (several calls share one, see
:meth:`ManagerClient.describe`), and a manager that is half-written still gets clear error
replies. Every call carries a client-side timeout, except the calls that wait for jobs
(``wait=True``, ``ActivateName``): those last as long as the jobs take, which only the
manager's own ``ready timeout`` bounds. Neither asyncio nor dbus-fast is imported unless the
dbus-fast transport is used.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from busmgr import (
    INSTANCE_INTERFACE,
    JOB_INTERFACE,
    MANAGER_BUS_NAME,
    MANAGER_INTERFACE,
    MANAGER_PATH,
)
from busmgr.bus.address import ConnectError, describe_address
from busmgr.bus.wire import BlockingBus, Call, ErrorReply, WireError, supported
from busmgr.escape import unescape as unescape_path_element
from busmgr.options import (
    DEFAULT_SYSTEM_BUS_ADDRESS,
    session_bus_address,
    system_bus_address,
)

__all__ = [
    "CALL_TIMEOUT",
    "CONNECT_TIMEOUT",
    "DEFAULT_SYSTEM_BUS_ADDRESS",
    "BusSelectionError",
    "ConnectError",
    "ErrorReply",
    "InstanceInfo",
    "JobRow",
    "ManagerClient",
    "call",
    "connect",
    "connect_blocking",
    "describe_address",
    "error_from_reply",
    "is_error_reply",
    "is_job_path",
    "job_path_of",
    "resolve_address",
    "run_blocking",
    "unescape_path_element",
    "unwrap",
]

T = TypeVar("T")

#: Seconds to wait for the reply to a call that does not wait for jobs. Generous: a manager busy
#: reloading hundreds of job files still answers well within it.
CALL_TIMEOUT = 120.0
#: Seconds to connect and authenticate.
CONNECT_TIMEOUT = 25.0

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

#: The match rule for the manager's signals: sent by its well-known name, so the bus daemon
#: keeps delivering a new owner's signals after the manager restarts.
MANAGER_SIGNAL_RULE = (
    f"type='signal',sender='{MANAGER_BUS_NAME}',"
    f"path='{MANAGER_PATH}',interface='{MANAGER_INTERFACE}'"
)
#: The match rule for the manager's name changing hands (it comes, it goes).
OWNER_RULE = (
    f"type='signal',sender='{DBUS_NAME}',path='{DBUS_PATH}',interface='{DBUS_NAME}',"
    f"member='NameOwnerChanged',arg0='{MANAGER_BUS_NAME}'"
)


class _ManagerGone(Exception):
    """The manager's name lost its owner (raised from a signal callback to end the wait)."""


class BusSelectionError(ValueError):
    """More than one of ``--address``, ``--session`` and ``--system`` was given."""


def resolve_address(
    args_address: str | None, session: bool, system: bool, environ: Mapping[str, str]
) -> str | None:
    """The bus a client should use.

    Returns an address string, or None when the session bus is asked for (or nothing is) but
    neither ``$DBUS_SESSION_BUS_ADDRESS`` nor ``$XDG_RUNTIME_DIR`` says where it is. Raises
    :class:`BusSelectionError` if more than one option is given.
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
    address = session_bus_address(environ)
    if address is None and os.path.isabs(environ.get("XDG_RUNTIME_DIR", "")):
        address = f"unix:path={environ['XDG_RUNTIME_DIR']}/bus"
    return address


def connect_blocking(address: str | None, timeout: float = CONNECT_TIMEOUT) -> BlockingBus:
    """A :class:`BlockingBus` connected to ``address``; raises :class:`ConnectError`."""
    if address is None:
        raise ConnectError(address, "no address to connect to")
    try:
        return BlockingBus.connect(address, timeout)
    except OSError as e:
        raise ConnectError(address, e.strerror or str(e) or type(e).__name__) from None
    except (WireError, TimeoutError, EOFError) as e:
        raise ConnectError(address, str(e) or type(e).__name__) from None


def blocking_supported(address: str | None) -> bool:
    """Whether :func:`connect_blocking` can reach ``address`` (a Unix socket address)."""
    return address is not None and supported(address)


async def connect(address: str | None) -> Any:
    """A connected dbus-fast ``MessageBus`` for ``address`` (imports dbus-fast and asyncio);
    raises :class:`ConnectError`."""
    if address is None:
        raise ConnectError(address, "no address to connect to")
    from busmgr.bus.link import connect as link_connect

    return await link_connect(address)


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end without an event loop. Every await in it must complete at
    once (the :class:`BlockingBus` transport); one that would suspend is a bug (RuntimeError)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a command-line verb waited for an event loop it does not have")


def error_from_reply(reply: Any) -> ErrorReply:
    """The :class:`ErrorReply` a dbus-fast error reply carries (its text may be missing)."""
    text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
    return ErrorReply(reply.error_name or "org.freedesktop.DBus.Error.Failed", text)


def is_error_reply(err: BaseException) -> bool:
    """Whether ``err`` is an error reply: :class:`ErrorReply`, or dbus-fast's ``DBusError``
    (only possible once dbus-fast is imported)."""
    if isinstance(err, ErrorReply):
        return True
    errors = sys.modules.get("dbus_fast.errors")
    return errors is not None and isinstance(err, errors.DBusError)


async def call(
    bus: Any,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: Iterable[Any] = (),
    *,
    destination: str = MANAGER_BUS_NAME,
    timeout: float | None = CALL_TIMEOUT,
) -> list[Any]:
    """Call one method on ``bus`` (either transport) and return the reply's body.

    Raises :class:`ErrorReply` on an error reply and :class:`TimeoutError` if no reply came
    within ``timeout`` seconds (``None``: wait as long as it takes).
    """
    (result,) = await call_many(
        bus, [Call(destination, path, interface, member, signature, list(body))], timeout
    )
    if isinstance(result, ErrorReply):
        raise result
    return result


async def call_many(
    bus: Any, calls: Sequence[Call], timeout: float | None = CALL_TIMEOUT
) -> list[list[Any] | ErrorReply]:
    """Make every call at once (one round trip); each result is a reply's body or its
    :class:`ErrorReply`."""
    if isinstance(bus, BlockingBus):
        return bus.call_many(calls, timeout)
    import asyncio

    from dbus_fast import Message, MessageType

    async def one(c: Call) -> list[Any] | ErrorReply:
        message = Message(
            destination=c.destination,
            path=c.path,
            interface=c.interface,
            member=c.member,
            signature=c.signature,
            body=list(c.body),
        )
        reply = await bus.call(message)
        if reply is None:  # only for NO_REPLY_EXPECTED, which we never set
            return []
        if reply.message_type == MessageType.ERROR:
            return error_from_reply(reply)
        return [unwrap(v) for v in reply.body]

    async with asyncio.timeout(timeout):
        return list(await asyncio.gather(*(one(c) for c in calls)))


def unwrap(value: Any) -> Any:
    """``value`` without dbus-fast's ``Variant`` wrappers, recursively."""
    if type(value).__name__ == "Variant" and hasattr(value, "signature"):
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
    result: str = ""
    reason: str = ""


class ManagerClient:
    """Typed calls to the manager at ``org.busmgr.Manager1`` on ``bus``.

    ``bus`` is a :class:`BlockingBus` or a dbus-fast ``MessageBus``. Methods raise
    :class:`ErrorReply` for error replies (``.type`` the error name, ``.text`` the message) and
    :class:`TimeoutError` when a non-waiting call gets no reply in time.
    """

    def __init__(self, bus: Any, timeout: float | None = CALL_TIMEOUT) -> None:
        self.bus = bus
        self.timeout = timeout
        self._callbacks: list[
            tuple[Callable[[str, list[Any]], None], Callable[[str], None] | None]
        ] = []
        self._handler_added = False
        self._failed: Exception | None = None
        self._wake: Any = None
        self._gone: Any = None  # the task awaiting the bus's disconnection (dbus-fast only)

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
        # Returns once the name has an owner, or fails: at once if the job fails, else a margin
        # before the bus's own activation timeout (the manager's patience, bus/patience.py).
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
        except ErrorReply as e:
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

        def owner_changed(new_owner: str) -> None:
            if not new_owner:
                raise _ManagerGone  # ends dispatch_signals: the manager left

        await self.subscribe(lambda _member, _body: None, owner_changed)
        try:
            await self._manager("EndSession", wait=True)
        except (EOFError, ConnectionError):
            return  # the private bus went away with the session: it is over
        except ErrorReply as e:
            if e.type != "org.freedesktop.DBus.Error.NoReply":
                raise
            return  # the manager left before it could reply: the session is over
        try:
            await self.dispatch_signals(self.timeout)
        except (_ManagerGone, EOFError):
            return  # gone, or the bus went away with it
        raise TimeoutError("the manager did not leave the bus")

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

    async def get_all_many(
        self, targets: Sequence[tuple[str, str]]
    ) -> list[dict[str, Any] | ErrorReply]:
        """:meth:`get_all` of every ``(path, interface)`` in one round trip."""
        calls = [
            Call(MANAGER_BUS_NAME, p, PROPERTIES_INTERFACE, "GetAll", "s", [i]) for p, i in targets
        ]
        results = await call_many(self.bus, calls, self.timeout)
        return [
            r if isinstance(r, ErrorReply) else {str(k): unwrap(v) for k, v in r[0].items()}
            for r in results
        ]

    async def get_instance(self, job: str, env: Mapping[str, str]) -> str:
        """The path of the instance of ``job`` that ``env`` selects (``Job1.GetInstance``)."""
        (path,) = await call(
            self.bus,
            job_path_for(job),
            JOB_INTERFACE,
            "GetInstance",
            "a{ss}",
            [dict(env)],
            timeout=self.timeout,
        )
        return str(path)

    async def get_instance_by_name(self, job: str, instance: str) -> str:
        """The path of the instance of ``job`` called ``instance``."""
        (path,) = await call(
            self.bus,
            job_path_for(job),
            JOB_INTERFACE,
            "GetInstanceByName",
            "s",
            [instance],
            timeout=self.timeout,
        )
        return str(path)

    async def manager_properties(self) -> dict[str, Any]:
        """Every property of the manager object (``LogDirectory``, ``ConfigurationErrors``...)."""
        return await self.get_all(MANAGER_PATH, MANAGER_INTERFACE)

    async def get_timeline(self) -> tuple[int, list[dict[str, Any]]]:
        """``GetTimeline``: when the manager started (µs since the epoch), and its runs."""
        start, runs = await self._manager("GetTimeline")
        return int(start), [unwrap(r) for r in runs]

    async def describe(self, rows: Iterable[JobRow], sources: bool = True) -> list[InstanceInfo]:
        """The goal, state, pid, bus name, result and (if ``sources``) source file of each row.

        Properties are read in one round trip. An instance that vanished since ``ListJobs`` is
        shown as ``stop/waiting``, which is what it became; a job path row is ``stop/waiting``
        too. Error replies other than "gone" are raised.
        """
        rows = list(rows)
        job_paths = sorted({job_path_of(r.path) for r in rows if sources or is_job_path(r.path)})
        instance_paths = [r.path for r in rows if not is_job_path(r.path)]
        targets = [(p, JOB_INTERFACE) for p in job_paths]
        targets += [(p, INSTANCE_INTERFACE) for p in instance_paths]
        results: list[dict[str, Any] | None] = []
        for result in await self.get_all_many(targets):
            if isinstance(result, ErrorReply):
                if result.type not in GONE_ERRORS:
                    raise result
                results.append(None)
            else:
                results.append(result)
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
                    result=str(props.get("Result", "")),
                    reason=str(props.get("ResultReason", "")),
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

    # ------------------------------------------------------------------ signals
    async def subscribe(
        self,
        callback: Callable[[str, list[Any]], None],
        owner_changed: Callable[[str], None] | None = None,
    ) -> None:
        """Call ``callback(member, body)`` for each manager signal from now on, and
        ``owner_changed(new_owner)`` when the manager's name changes hands (``""``: it left).

        The match rule names the manager's well-known name as sender, so the bus daemon keeps
        delivering a new owner's signals after the manager restarts. On return the rules are in
        place: every signal emitted after this returns reaches ``callback`` once
        :meth:`dispatch_signals` runs. An exception a callback raises ends
        :meth:`dispatch_signals` (it is raised there).
        """
        self._callbacks.append((callback, owner_changed))
        rules = [MANAGER_SIGNAL_RULE] + ([OWNER_RULE] if owner_changed else [])
        if not isinstance(self.bus, BlockingBus) and not self._handler_added:
            self._handler_added = True
            self.bus.add_message_handler(self._on_dbus_fast_message)
        for rule in rules:
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

    def _deliver(self, member: str, path: str, interface: str, signature: str, body: Any) -> None:
        if path == MANAGER_PATH and interface == MANAGER_INTERFACE:
            if MANAGER_SIGNALS.get(member) == signature:
                for callback, _ in self._callbacks:
                    callback(member, list(body))
        elif member == "NameOwnerChanged" and interface == DBUS_NAME and signature == "sss":
            name, _old, new = body
            if name == MANAGER_BUS_NAME:
                for _, owner_changed in self._callbacks:
                    if owner_changed is not None:
                        owner_changed(str(new))

    def _on_dbus_fast_message(self, message: Any) -> None:
        if message.message_type.name != "SIGNAL" or self._failed is not None:
            return
        try:
            self._deliver(
                message.member or "",
                message.path or "",
                message.interface or "",
                message.signature,
                message.body,
            )
        except Exception as err:  # ends dispatch_signals, which raises it
            self._failed = err
            if self._wake is not None and not self._wake.done():
                self._wake.set_result(None)

    async def dispatch_signals(self, timeout: float | None, hangup_fd: int | None = None) -> None:
        """Deliver signals to the subscribed callbacks for ``timeout`` seconds (None: for as long
        as the bus lasts). Raises :class:`EOFError` when the bus goes away, whatever a callback
        raised (which ends the dispatching), and (blocking transport) BrokenPipeError as soon as
        ``hangup_fd``, a pipe we write to, has lost its reader."""
        if isinstance(self.bus, BlockingBus):
            self._dispatch_blocking(timeout, hangup_fd)
        else:
            await self._dispatch_dbus_fast(timeout)

    def _dispatch_blocking(self, timeout: float | None, hangup_fd: int | None) -> None:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            message = self.bus.next_signal(left, hangup_fd)
            if message is None:
                return
            self._deliver(
                message.member, message.path, message.interface, message.signature, message.body
            )

    async def _dispatch_dbus_fast(self, timeout: float | None) -> None:
        import asyncio

        if self._failed is None:
            self._wake = asyncio.get_running_loop().create_future()
            if self._gone is None:
                # One watcher for the client's life, never cancelled: cancelling a task that
                # awaits dbus-fast's disconnect future would cancel that future for every
                # later wait_for_disconnect() too.
                self._gone = asyncio.ensure_future(self.bus.wait_for_disconnect())
                self._gone.add_done_callback(lambda t: t.cancelled() or t.exception())
            gone = self._gone
            try:
                await asyncio.wait(
                    [gone, self._wake], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                self._wake = None
            if gone.done():
                raise EOFError("the bus closed the connection")
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed


def job_path_for(job: str) -> str:
    """The object path of the job named ``job``."""
    from busmgr.escape import escape

    return JOB_PATH_PREFIX + escape(job)
