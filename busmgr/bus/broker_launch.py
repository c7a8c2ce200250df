"""Launching dbus-broker: busmgr as its launcher, the role ``dbus-broker-launch`` has under
systemd.

:func:`launch_broker` checks the broker's version, creates the listening socket, spawns
``dbus-broker --controller FD --machine-id ID`` with one end of a ``socketpair``, speaks the
controller handshake (:mod:`busmgr.bus.controller`) and hands the broker the listening socket
and its policy (``AddListener``). On return the bus accepts clients at
:attr:`LaunchedBroker.address`; the activation backend
(:mod:`busmgr.bus.activation.broker`) then adds the activatable names on the same controller.

The broker is a child of the manager like any job process: :mod:`busmgr.process` spawns it and
the one reaper reaps it (``watch``), so the caller learns of its exit. It exits by itself when
the controller connection closes, which is how :meth:`LaunchedBroker.close` stops it.

:func:`standard_bus` says how to launch it as a standard bus (``daemon --launch-bus
--broker``): the system bus at its well-known socket (or where ``--bus-config`` listens) with
the policy translated from ``system.conf`` (:mod:`busmgr.bus.busconfig`), or a user's session
bus at ``$XDG_RUNTIME_DIR/bus``.

Versions: the controller interface (``Reset`` with an error name) and the policy value
(:mod:`busmgr.bus.broker_policy`) busmgr speaks are those of dbus-broker 33 (Debian 12, the
version the tests run) through 36; the policy format changed in 14 and 32, and any protocol
mistake ends the bus, so other versions are refused with one line naming the version.

Invariants: the listening socket is non-blocking (the broker requires it) and is closed in the
manager once the broker holds it; on any failure nothing is left behind (the broker is killed,
the sockets closed, a directory this module made removed) and the error is one line
(:class:`busmgr.process.SpawnError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from busmgr import process
from busmgr.bus.broker_policy import Policy, session_policy
from busmgr.bus.busconfig import SYSTEM_CONF, translate
from busmgr.bus.controller import ControllerConnection, ControllerError
from busmgr.bus.daemon import make_bus_directory
from busmgr.jobclass import ConsoleMode, ExecContext
from busmgr.options import DEFAULT_SYSTEM_BUS_ADDRESS, Mode

__all__ = [
    "BROKER",
    "SUPPORTED_VERSIONS",
    "LaunchedBroker",
    "address_of",
    "bus_policy",
    "launch_broker",
    "listen_path",
    "machine_id",
    "parse_version",
    "standard_bus",
    "standard_socket",
]

BROKER = "dbus-broker"
BROKER_PATH = "/org/bus1/DBus/Broker"
BROKER_IFACE = "org.bus1.DBus.Broker"
LISTENER_PATH = "/org/bus1/DBus/Listener/0"
#: The versions whose controller interface and policy format busmgr speaks (module docstring).
SUPPORTED_VERSIONS = range(33, 37)
VERSION_TIMEOUT = 10.0
LISTEN_BACKLOG = 4096
MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))

Watch = Callable[[int, process.ExitCallback], None]
log = logging.getLogger("busmgr")


@dataclass
class LaunchedBroker:
    """A running dbus-broker and busmgr's controller connection to it.

    ``directory`` is the private directory of its socket (removed by :meth:`remove`), or None
    when the socket lives at a path the caller chose. ``servicedir`` is always None: the broker
    reads no service files (the activation backend tells it the names instead)."""

    address: str
    pid: int
    controller: ControllerConnection
    socket_path: Path
    directory: Path | None
    version: int
    name: str = BROKER
    servicedir: Path | None = None

    def close(self) -> None:
        """Close the controller: the broker exits when it sees that."""
        self.controller.close()

    def remove(self) -> None:
        """Remove what was made on disk, once the broker is gone."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()


def parse_version(text: str) -> int | None:
    """The major version in ``dbus-broker --version`` output (``dbus-broker 33``), or None."""
    match = re.match(r"\s*dbus-broker\s+(\d+)\b", text)
    return int(match.group(1)) if match else None


def machine_id(paths: tuple[Path, ...] = MACHINE_ID_FILES) -> str:
    """The machine id (32 lowercase hex digits) the broker reports to clients; a fresh random
    one when the machine has none (a bare container): ``GetMachineId`` then differs per bus,
    which is what a machine without an id can offer."""
    for path in paths:
        with contextlib.suppress(OSError):
            text = path.read_text().strip().lower()
            if re.fullmatch(r"[0-9a-f]{32}", text):
                return text
    return uuid.uuid4().hex


_ADDRESS_SAFE = re.compile(rb"[-0-9A-Za-z_/.\\*]")


def address_of(path: Path) -> str:
    """The D-Bus address of a unix socket at ``path`` (values escaped as the spec says)."""
    raw = os.fsencode(path)
    escaped = "".join(chr(b) if _ADDRESS_SAFE.fullmatch(bytes([b])) else f"%{b:02x}" for b in raw)
    return f"unix:path={escaped}"


async def launch_broker(
    environ: Mapping[str, str],
    policy: Policy,
    *,
    watch: Watch,
    on_exit: process.ExitCallback,
    socket_path: Path | None = None,
    socket_mode: int = 0o600,
) -> LaunchedBroker:
    """Start dbus-broker listening at ``socket_path`` (None: ``bus`` in a fresh private
    directory) with ``policy``; return once it accepts clients.

    ``watch`` is the reaper's ``watch(pid, callback)``; the broker's exit goes to ``on_exit``.
    Raises :class:`busmgr.process.SpawnError` with one line (no broker installed, a version
    busmgr does not speak, a socket that cannot be made, a broker that fails the handshake).
    """
    binary = shutil.which(BROKER, path=environ.get("PATH", os.defpath))
    if binary is None:
        raise process.SpawnError(
            f'exec "{BROKER}": not found in PATH; install the Debian package dbus-broker'
        )
    directory = make_bus_directory(environ) if socket_path is None else None
    path = socket_path if socket_path is not None else Path(directory or ".") / "bus"
    listener: socket.socket | None = None
    ours: socket.socket | None = None
    theirs: socket.socket | None = None
    pid = 0
    try:
        version = await _version(binary, environ, watch, directory)
        listener = _listen(path, socket_mode)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs.set_inheritable(True)
        argv = [
            binary,
            "--controller",
            str(theirs.fileno()),
            "--machine-id",
            machine_id(),
        ]
        env = {k: v for k, v in environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
        pid = process.spawn(
            argv, env, ExecContext(console=ConsoleMode.OUTPUT), pass_fds=(theirs.fileno(),)
        )
        watch(pid, on_exit)
        theirs.close()
        theirs = None
        controller = ControllerConnection(ours)
        ours = None  # the controller owns it now
        try:
            await controller.authenticate()
            await controller.call(
                BROKER_PATH,
                BROKER_IFACE,
                "AddListener",
                "ohv",
                [LISTENER_PATH, 0, policy.variant()],
                unix_fds=(listener.fileno(),),
            )
        except ControllerError as err:
            controller.close()
            raise process.SpawnError(f"{BROKER} (pid {pid}): {err}") from None
        return LaunchedBroker(
            address=address_of(path),
            pid=pid,
            controller=controller,
            socket_path=path,
            directory=directory,
            version=version,
        )
    except BaseException:
        if pid:
            process.kill_pid(pid, signal.SIGKILL)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        elif listener is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise
    finally:
        for sock in (listener, ours, theirs):
            if sock is not None:
                sock.close()


def _listen(path: Path, mode: int) -> socket.socket:
    """A non-blocking listening unix socket at ``path`` (a stale socket there is replaced; a
    live one, some bus already listening there, or any other file is an error)."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            if _listening(path):
                raise process.SpawnError(
                    f"a bus already listens at {path}: stop it first, or run busmgr without "
                    "--launch-bus on that bus"
                )
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        sock.bind(os.fsencode(path))
        os.chmod(path, mode)
        sock.listen(LISTEN_BACKLOG)
    except OSError as err:
        sock.close()
        raise process.SpawnError(f"listening socket {path}", err.strerror or str(err)) from None
    return sock


def _listening(path: Path) -> bool:
    """Whether something accepts connections at the unix socket ``path`` (answered at once)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(os.fsencode(path))
        except OSError:
            return False
    return True


async def _version(
    binary: str, environ: Mapping[str, str], watch: Watch, directory: Path | None
) -> int:
    """Run ``dbus-broker --version`` (its output to a file: the process seam's console log)
    and return the major version; raise :class:`SpawnError` unless busmgr speaks it."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="busmgr-broker-", dir=directory) as tmp:
        out = os.path.join(tmp, "version")
        pid = process.spawn(
            [binary, "--version"],
            dict(environ),
            ExecContext(console=ConsoleMode.LOG),
            log_path=out,
        )
        done: asyncio.Future[process.ExitInfo] = loop.create_future()
        watch(pid, lambda _pid, info: done.done() or done.set_result(info))
        try:
            info = await asyncio.wait_for(done, VERSION_TIMEOUT)
        except TimeoutError:
            process.kill_pid(pid, signal.SIGKILL)
            raise process.SpawnError(
                f"{binary} --version did not finish in {VERSION_TIMEOUT:g}s"
            ) from None
        text = Path(out).read_text(errors="replace")
    version = parse_version(text)
    if info.status != 0 or version is None:
        raise process.SpawnError(
            f"{binary} --version {info.describe()} without naming its version: {text.strip()!r}"
        )
    if version not in SUPPORTED_VERSIONS:
        raise process.SpawnError(
            f"{binary} is version {version}; busmgr speaks the controller protocol of "
            f"dbus-broker {SUPPORTED_VERSIONS.start}-{SUPPORTED_VERSIONS.stop - 1} only"
        )
    return version


# ============================================================================ a user's bus
def standard_socket(mode: Mode, environ: Mapping[str, str]) -> tuple[Path, int]:
    """Where a standard bus listens, and the socket's mode: the system bus at the well-known
    path (anyone may connect; the policy decides), a user's session bus at
    ``$XDG_RUNTIME_DIR/bus`` (the user's alone). Raises :class:`SpawnError` when a session
    bus has no runtime directory to live in."""
    if mode is Mode.SYSTEM:
        return Path(DEFAULT_SYSTEM_BUS_ADDRESS.removeprefix("unix:path=")), 0o666
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if not runtime or not os.path.isabs(runtime):
        raise process.SpawnError("XDG_RUNTIME_DIR is not set: no place for the user's bus socket")
    return Path(runtime) / "bus", 0o600


def bus_policy(mode: Mode, config: Path = SYSTEM_CONF) -> Policy:
    """The policy of a standard bus: the system bus's translated from its XML configuration
    (every problem logged as ``FILE:LINE: message``), a session bus's own."""
    if mode is Mode.SESSION:
        return session_policy(os.getuid())
    translation = translate(config)
    for line in translation.diagnostics:
        log.warning("%s", line)
    return translation.policy


def standard_bus(
    mode: Mode, environ: Mapping[str, str], config: Path | None = None
) -> tuple[Policy, Path, int]:
    """``busmgr daemon --system|--session --launch-bus --broker``: dbus-broker as the machine's
    system bus or the user's session bus, with its standard policy, at its standard address,
    or (system mode with ``config``, ``--bus-config``) where that configuration listens, with
    the policy translated from it. Returns the policy, the socket path (its directory made)
    and the socket's mode; the keeper launches it with :func:`launch_broker` as it launches
    ``session --broker``, and the broker activation backend works on its controller."""
    if mode is Mode.SYSTEM and config is not None:
        path = listen_path(config) or standard_socket(mode, environ)[0]
        socket_mode = 0o666
        policy = bus_policy(mode, config)
    else:
        path, socket_mode = standard_socket(mode, environ)
        policy = bus_policy(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    return policy, path, socket_mode


def listen_path(config: Path) -> Path | None:
    """The socket of the first ``<listen>unix:path=...</listen>`` of a bus configuration file
    (its own elements, not its includes), or None."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(config).getroot()
    except (OSError, ET.ParseError):
        return None
    for element in root.findall("listen"):
        text = (element.text or "").strip()
        if text.startswith("unix:path="):
            return Path(text.removeprefix("unix:path=").split(",", 1)[0])
    return None
