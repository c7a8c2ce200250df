"""Shared fixtures: a real ``busmgr session`` (its own private dbus-daemon) per test module.

A test module declares the job files it needs in a module-level ``JOBS = {name: text}``; the
``session`` fixture writes them to a temporary ``services.d``, starts ``busmgr session
--print-address`` as a child process, and connects a dbus-fast client to its bus. At the end it
sends SIGTERM, requires exit status 0, and checks that no process the session started is left.

Which bus: the session runs on a private ``dbus-daemon`` by default. A module that sets
``BUSES = ALL_BUSES`` runs each of its tests that take ``session`` on both ``dbus-daemon`` and
``dbus-broker`` (``busmgr session --broker``; one session per module and bus); a test marked
``@pytest.mark.buses(DBUS_DAEMON)`` runs on the buses named there only. ``start_session``
takes ``bus=`` for tests that build their own session. When dbus-broker is not installed its
runs are skipped with the reason (``.ci/system-deps`` installs it).

Nothing here sleeps: every wait is for a bus signal, a reply or a process exit, with a timeout.
Every async test runs with the loop watched (:func:`_loop_never_blocked`): a callback that
holds the test's loop for more than :data:`TEST_LOOP_LIMIT` seconds, or a manager's loop for
more than :data:`BLOCKED_LIMIT` (100 ms), fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

# instance_path is imported here, not in a test's coroutine: a first import (compiled, when
# bytecode is not cached) would hold the test's event loop.
from busmgr import MANAGER_BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH, loopwatch
from busmgr.bus.values import instance_path

HELPERS = Path(__file__).parent / "helpers"
PYTHON = sys.executable
TIMEOUT = 20.0
# Seconds one callback may hold a manager's event loop (every manager a test starts runs with
# BUSMGR_LOOP_DEBUG set to it). A loaded development machine may raise it with
# BUSMGR_TEST_LOOP_LIMIT; CI uses the default.
BLOCKED_LIMIT = float(os.environ.get("BUSMGR_TEST_LOOP_LIMIT", "0.1"))
# The same for the tests' own loop, which also runs test steps that are not busmgr's (dozens of
# processes created in one step, test clients decoding every signal): a looser bound, still far
# below anything a user would notice.
TEST_LOOP_LIMIT = max(BLOCKED_LIMIT, 0.25)
DBUS_DAEMON = "dbus-daemon"
DBUS_BROKER = "dbus-broker"
ALL_BUSES = (DBUS_DAEMON, DBUS_BROKER)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "buses(*names): run this test on these buses only")
    config.addinivalue_line(
        "markers", "spawn_paths(*paths): run this test on these spawn paths only"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the cases of a ``spawn_paths`` test on the other paths (they do not apply:
    a skip would read as something missing)."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("spawn_paths")
        callspec = getattr(item, "callspec", None)
        path = callspec.params.get("spawn_path") if callspec is not None else None
        if marker is not None and path is not None and path not in marker.args:
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``session`` on every bus of the module's ``BUSES`` (see the module docstring)."""
    buses: tuple[str, ...] = getattr(metafunc.module, "BUSES", ())
    if "session" not in metafunc.fixturenames or not buses:
        return
    marker = metafunc.definition.get_closest_marker("buses")
    if marker is not None:
        buses = tuple(b for b in buses if b in marker.args)
    metafunc.parametrize("session", buses, indirect=True, scope="module")


def require_bus(bus: str) -> None:
    """Skip (with the reason) when the bus program is not installed."""
    if shutil.which(bus) is None:
        pytest.skip(f"{bus} is not installed (.ci/system-deps installs the Debian package)")


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def _loop_never_blocked(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail the test if the event loop was blocked for more than ``TEST_LOOP_LIMIT`` seconds by
    any one callback while it ran (timed as the manager's ``BUSMGR_LOOP_DEBUG`` times its own:
    :mod:`busmgr.loopwatch`, not counting the time a loaded machine kept the thread off a CPU)."""
    if not request.node.get_closest_marker("asyncio") and not asyncio.iscoroutinefunction(
        getattr(request.node, "function", None)
    ):
        yield
        return
    reports: list[str] = []
    unwatch = loopwatch.watch(TEST_LOOP_LIMIT, reports.append)
    try:
        yield
    finally:
        unwatch()
    if reports:
        pytest.fail("the event loop was blocked: " + "; ".join(reports), pytrace=False)


async def call_method(
    bus: MessageBus,
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
) -> list[Any]:
    """One method call on ``bus`` within ``TIMEOUT``: the reply's body, or the error reply
    raised as ``DBusError``."""
    message = Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body or [],
    )
    reply = await asyncio.wait_for(bus.call(message), TIMEOUT)
    assert reply is not None
    if reply.message_type is MessageType.ERROR:
        raise DBusError(reply.error_name, reply.body[0] if reply.body else "")
    return list(reply.body)


class Signals:
    """Every signal of the manager, in arrival order, and a way to wait for one."""

    def __init__(self) -> None:
        self.items: list[tuple[str, list[Any]]] = []
        self._changed = asyncio.Event()

    def add(self, member: str, body: list[Any]) -> None:
        self.items.append((member, body))
        self._changed.set()

    async def wait_for(
        self,
        predicate: Callable[[str, list[Any]], bool],
        *,
        start: int = 0,
        timeout: float = TIMEOUT,
    ) -> tuple[str, list[Any]]:
        """The first signal from index ``start`` on that satisfies ``predicate``."""

        async def scan() -> tuple[str, list[Any]]:
            i = start
            while True:
                while i < len(self.items):
                    if predicate(*self.items[i]):
                        return self.items[i]
                    i += 1
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    def mark(self) -> int:
        return len(self.items)

    def job_signals(self, job: str, start: int = 0) -> list[tuple[str, str]]:
        """(member, instance) of the lifecycle signals of ``job`` from ``start`` on."""
        return [(m, b[1]) for m, b in self.items[start:] if m.startswith("Job") and b[0] == job]


class Session:
    """A running ``busmgr session`` and a client connection to its bus."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        address: str,
        bus: MessageBus,
        services: Path,
        state: Path,
        signals: Signals,
        stderr: Path,
        bus_kind: str = DBUS_DAEMON,
    ) -> None:
        self.bus_kind = bus_kind
        self.proc = proc
        self.stderr = stderr
        self.address = address
        self.bus = bus
        self.services = services
        self.state = state
        self.signals = signals

    @property
    def env(self) -> dict[str, str]:
        """An environment for CLI and tool subprocesses that talk to this session."""
        env = dict(os.environ)
        env["BUSMGR_ADDRESS"] = self.address
        env["DBUS_SESSION_BUS_ADDRESS"] = self.address
        return env

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        path: str = MANAGER_PATH,
        interface: str = MANAGER_INTERFACE,
        destination: str = MANAGER_BUS_NAME,
    ) -> list[Any]:
        return await call_method(self.bus, destination, path, interface, member, signature, body)

    async def start(self, job: str, env: dict[str, str] | None = None, wait: bool = True) -> str:
        return (await self.call("StartJob", "sa{ss}b", [job, env or {}, wait]))[0]

    async def stop(self, job: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        await self.call("StopJob", "sa{ss}b", [job, env or {}, wait])

    async def emit(self, name: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        await self.call("EmitEvent", "sa{ss}b", [name, env or {}, wait])

    async def props(self, path: str, interface: str = "org.busmgr.Instance1") -> dict[str, Any]:
        body = await self.call(
            "GetAll", "s", [interface], path=path, interface="org.freedesktop.DBus.Properties"
        )
        return {k: v.value for k, v in body[0].items()}

    async def instance(self, job: str, instance: str = "") -> dict[str, Any]:
        return await self.props(instance_path(job, instance))

    async def wait_running(self, job: str, instance: str = "") -> dict[str, Any]:
        """Wait until ``job`` is running (it may have started before this client connected)."""
        mark = self.signals.mark()
        with contextlib.suppress(DBusError):
            props = await self.instance(job, instance)
            if props["State"] == "running":
                return props
        await self.signals.wait_for(
            lambda m, b: m == "JobStarted" and b[0] == job and b[1] == instance, start=mark
        )
        return await self.instance(job, instance)

    def write_job(self, name: str, text: str) -> Path:
        path = self.services / f"{name}.conf"
        path.write_text(textwrap.dedent(text))
        return path

    def descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.proc.pid).children(recursive=True)
        return []


async def until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Let the loop run, a turn at a time, until ``predicate`` holds (for in-process tests whose
    code under test makes progress in loop callbacks and tasks); fails after ``timeout``."""

    async def turns() -> None:
        loop = asyncio.get_running_loop()
        while not predicate():
            turn: asyncio.Future[None] = loop.create_future()
            loop.call_soon(turn.set_result, None)
            await turn

    await asyncio.wait_for(turns(), timeout)


_libc = ctypes.CDLL(None, use_errno=True)
_IN_CREATE = 0x100
_IN_MOVED_TO = 0x80
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


async def wait_for_file(
    path: Path, timeout: float = TIMEOUT, until: Callable[[Path], bool] = Path.exists
) -> None:
    """Return once ``until(path)`` holds (by default: ``path`` exists), checked whenever a file
    is created or moved into its directory, without polling: an inotify watch on the
    directory, read through the loop."""
    fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    try:
        if _libc.inotify_add_watch(fd, bytes(path.parent), _IN_CREATE | _IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path.parent}")
        loop.add_reader(fd, changed.set)
        try:

            async def appear() -> None:
                while not until(path):
                    await changed.wait()
                    changed.clear()
                    with contextlib.suppress(BlockingIOError):
                        os.read(fd, 65536)

            await asyncio.wait_for(appear(), timeout)
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


async def wait_for_manager(address: str, address_file: Path) -> MessageBus:
    """A new connection to the bus at ``address`` once the manager is back on it: it writes
    its ``address_file`` again then (the test removed it), and owns its name."""
    await wait_for_file(address_file)
    bus = await MessageBus(bus_address=address).connect()
    await wait_for_owner(bus, MANAGER_BUS_NAME)
    return bus


async def wait_for_owner(bus: MessageBus, name: str) -> str:
    """The owner of ``name`` once it has one: subscribe to NameOwnerChanged, then ask."""
    loop = asyncio.get_running_loop()
    owned: asyncio.Future[str] = loop.create_future()

    def handler(msg: Message) -> None:
        changed = msg.member == "NameOwnerChanged" and msg.body[0] == name and msg.body[2]
        if changed and not owned.done():
            owned.set_result(msg.body[2])

    bus.add_message_handler(handler)
    await add_match(bus, f"type='signal',member='NameOwnerChanged',arg0='{name}'")
    reply = await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="GetNameOwner",
            signature="s",
            body=[name],
        )
    )
    if reply.message_type is MessageType.METHOD_RETURN and not owned.done():
        owned.set_result(reply.body[0])
    try:
        return await asyncio.wait_for(owned, TIMEOUT)
    finally:
        bus.remove_message_handler(handler)


async def name_owner(bus: MessageBus, name: str) -> str:
    reply = await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="GetNameOwner",
            signature="s",
            body=[name],
        )
    )
    return reply.body[0] if reply.message_type is MessageType.METHOD_RETURN else ""


async def new_owner_of(bus: MessageBus, name: str, old: str) -> str:
    """Wait until ``name`` has an owner other than ``old`` (subscribe, then ask)."""
    loop = asyncio.get_running_loop()
    found: asyncio.Future[str] = loop.create_future()

    def handler(msg: Message) -> None:
        if msg.member == "NameOwnerChanged" and msg.body[0] == name:
            owner = msg.body[2]
            if owner and owner != old and not found.done():
                found.set_result(owner)

    bus.add_message_handler(handler)
    try:
        await add_match(bus, f"type='signal',member='NameOwnerChanged',arg0='{name}'")
        now = await name_owner(bus, name)
        if now and now != old and not found.done():
            found.set_result(now)
        return await asyncio.wait_for(found, TIMEOUT)
    finally:
        bus.remove_message_handler(handler)


async def add_match(bus: MessageBus, rule: str) -> None:
    """Subscribe ``bus`` to the signals ``rule`` matches (org.freedesktop.DBus.AddMatch)."""
    await call_method(
        bus,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "AddMatch",
        "s",
        [rule],
    )


async def start_session(
    tmp: Path,
    jobs: dict[str, str],
    *,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    bus: str = DBUS_DAEMON,
) -> Session:
    require_bus(bus)
    services = tmp / "services.d"
    state = tmp / "state"
    services.mkdir(parents=True, exist_ok=True)
    for name, text in jobs.items():
        (services / f"{name}.conf").write_text(textwrap.dedent(text))
    run_env = dict(os.environ if env is None else env)
    run_env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    run_env["XDG_RUNTIME_DIR"] = str(tmp)
    run_env["TESTS_HELPERS"] = str(HELPERS)
    run_env["PYTHON"] = PYTHON
    run_env.setdefault("BUSMGR_LOG_LEVEL", "INFO")
    # The manager's loop watch (busmgr.loopwatch): every callback that holds its loop for more
    # than BLOCKED_LIMIT is logged, and stop_session fails the test for it.
    run_env.setdefault("BUSMGR_LOOP_DEBUG", str(BLOCKED_LIMIT))
    argv = [
        PYTHON,
        "-m",
        "busmgr",
        "session",
        "--print-address",
        "--services-dir",
        str(services),
        "--state-dir",
        str(state),
        *(extra or ["--no-import"]),
        *(["--broker"] if bus == DBUS_BROKER else []),
    ]
    stderr = tmp / "stderr.log"
    with open(stderr, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=err, env=run_env
        )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
    address = line.decode().strip()
    if not address:
        await proc.wait()
        pytest.fail(
            f"busmgr session exited with {proc.returncode} before printing an address:"
            f" {stderr.read_text()}"
        )
    client = await MessageBus(bus_address=address).connect()
    signals = Signals()

    def on_message(msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.interface == MANAGER_INTERFACE:
            signals.add(msg.member, list(msg.body))

    client.add_message_handler(on_message)
    await add_match(client, f"type='signal',interface='{MANAGER_INTERFACE}'")
    return Session(proc, address, client, services, state, signals, stderr, bus)


async def stop_session(session: Session, *, expect_status: int | None = 0) -> int:
    """SIGTERM the session, wait for it, and check that nothing it started survives."""
    left = session.descendants()
    session.bus.disconnect()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(session.bus.wait_for_disconnect(), TIMEOUT)
    if session.proc.returncode is None:
        session.proc.send_signal(signal.SIGTERM)
    status = await asyncio.wait_for(session.proc.wait(), 60)
    survivors = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in survivors:  # only processes this session started
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    assert not survivors, f"processes left behind: {survivors}"
    blocked = [
        line
        for line in session.stderr.read_text(errors="replace").splitlines()
        if "Executing " in line and " took " in line
    ]
    assert not blocked, "the manager's event loop was blocked: " + "; ".join(blocked)
    if expect_status is not None:
        assert status == expect_status, f"busmgr session exited with {status}"
    return status


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Session]:
    jobs: dict[str, str] = getattr(request.module, "JOBS", {})
    extra: list[str] | None = getattr(request.module, "SESSION_ARGS", None)
    bus: str = getattr(request, "param", DBUS_DAEMON)
    tmp = tmp_path_factory.mktemp("session")
    sess = await start_session(tmp, jobs, extra=extra, bus=bus)
    try:
        yield sess
    finally:
        await stop_session(sess)
