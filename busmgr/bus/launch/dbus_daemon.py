"""The reference ``dbus-daemon`` as busmgr's child: the system bus (or a user's session bus).

Model: busmgr writes a two-line configuration, ``busmgr-<mode>-bus.conf``, beside its service
directory::

    <servicedir>SERVICEDIR</servicedir>       busmgr's activation files, searched first
    <include>MACHINE_CONFIG</include>         the machine's own bus configuration

and runs ``dbus-daemon --config-file=THAT --nofork --nopidfile --systemd-activation
--print-address=FD``. The machine's configuration (``/usr/share/dbus-1/system.conf``, or
``--bus-config FILE``) keeps everything it says: where the bus listens, its user, its policy
(``system.d/``, with busmgr's policy files), its other service directories. Because busmgr's
directory comes first and each of busmgr's files names a unit (``SystemdService=``), the daemon
asks busmgr for every name a job provides, installed system services included, and never starts
one itself; ``--systemd-activation`` makes it send those requests to the owner of
``org.freedesktop.systemd1``, which busmgr is on a bus it launched.

Before the start: the service directory exists (the daemon reads it at once); on the system bus
the socket directory ``/run/dbus`` exists and the machine has an id (``/etc/machine-id`` or
``/var/lib/dbus/machine-id``; a fresh one is written to the latter when neither has one, as
``dbus-uuidgen --ensure`` does, which the init scripts of dbus run). A bus already listening at
the standard address is never replaced: that is an error naming it.

Invariants: nothing here blocks the loop for longer than a small file write; the daemon's
stdout/stderr are the manager's; the configuration file is removed by :meth:`LaunchedBus.remove`
once the daemon has exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from busmgr import process
from busmgr.bus.daemon import xml_text
from busmgr.jobclass import ConsoleMode, ExecContext
from busmgr.options import DEFAULT_SYSTEM_BUS_ADDRESS, Mode

__all__ = ["DbusDaemonLauncher", "LaunchedBus", "machine_config"]

DBUS_DAEMON = "dbus-daemon"
SEARCH_PATH = "/usr/local/bin:/usr/bin:/bin"

#: Where dbus-daemon's own configuration for each bus lives (``--system`` / ``--session``),
#: newest location first.
MACHINE_CONFIGS = {
    Mode.SYSTEM: (Path("/usr/share/dbus-1/system.conf"), Path("/etc/dbus-1/system.conf")),
    Mode.SESSION: (Path("/usr/share/dbus-1/session.conf"), Path("/etc/dbus-1/session.conf")),
}
MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
SYSTEM_SOCKET = Path(DEFAULT_SYSTEM_BUS_ADDRESS.removeprefix("unix:path="))

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- Written by busmgr for the bus it launches; removed when it stops. busmgr's activation
     files come first, then the machine's own configuration, unchanged. -->
<busconfig>
  <servicedir>{servicedir}</servicedir>
  <include>{config}</include>
</busconfig>
"""


def machine_config(mode: Mode) -> Path | None:
    """The machine's dbus-daemon configuration for ``mode``'s bus, or None if it has none."""
    return next((path for path in MACHINE_CONFIGS[mode] if path.is_file()), None)


@dataclass(frozen=True)
class LaunchedBus:
    """A running dbus-daemon: its address, pid, busmgr's service directory on it, and the
    configuration file busmgr wrote for it."""

    address: str
    pid: int
    servicedir: Path
    config_file: Path

    def remove(self) -> None:
        """Remove busmgr's configuration file (once the daemon has exited)."""
        with contextlib.suppress(FileNotFoundError):
            self.config_file.unlink()


@dataclass(frozen=True)
class DbusDaemonLauncher:
    """How to start dbus-daemon for one bus.

    ``mode`` is the bus (system or a user's session); ``servicedir`` the directory busmgr's
    activation files go to; ``config`` the machine's configuration to include (None: the
    machine's default for the mode); ``listen`` an address for the daemon to listen on instead
    of the configuration's (the session bus's ``$XDG_RUNTIME_DIR/bus``); ``timeout`` how long
    the daemon may take to listen.
    """

    mode: Mode
    servicedir: Path
    config: Path | None = None
    listen: str | None = None
    timeout: float = 10.0

    @property
    def config_file(self) -> Path:
        return self.servicedir.parent / f"busmgr-{self.mode.value}-bus.conf"

    async def launch(self, environ: Mapping[str, str], watch: Callable[[int], None]) -> LaunchedBus:
        """Start the daemon; see :class:`busmgr.bus.launch.BusLauncher`."""
        daemon = shutil.which(DBUS_DAEMON, path=environ.get("PATH") or SEARCH_PATH)
        if daemon is None:
            raise process.SpawnError(
                f'exec "{DBUS_DAEMON}": not found in PATH; install the package dbus-daemon'
            )
        config = self.config or machine_config(self.mode)
        if config is None:
            where = " or ".join(map(str, MACHINE_CONFIGS[self.mode]))
            raise process.SpawnError(f"no {self.mode.value} bus configuration: none at {where}")
        self._prepare(config)
        argv = [
            daemon,
            f"--config-file={self.config_file}",
            "--nofork",
            "--nopidfile",
            "--systemd-activation",
        ]
        if self.listen is not None:
            argv.append(f"--address={self.listen}")
        env = {k: v for k, v in environ.items() if not k.startswith("DBUS_")}
        read_fd, write_fd = os.pipe()
        try:
            argv.append(f"--print-address={write_fd}")
            pid = process.spawn(
                argv, env, ExecContext(console=ConsoleMode.OUTPUT), pass_fds=(write_fd,)
            )
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        os.close(write_fd)
        watch(pid)
        try:
            address = await asyncio.wait_for(_first_line(read_fd), self.timeout)  # owns read_fd
        except TimeoutError:
            raise process.SpawnError(
                f"dbus-daemon (pid {pid}) did not listen within {self.timeout:g} seconds"
            ) from None
        if not address:
            raise process.SpawnError(
                f"dbus-daemon (pid {pid}) exited before it listened (its errors are above)"
            )
        return LaunchedBus(address, pid, self.servicedir, self.config_file)

    def taken_back(self, address: str, pid: int) -> LaunchedBus:
        """See :meth:`busmgr.bus.launch.BusLauncher.taken_back`."""
        return LaunchedBus(address, pid, self.servicedir, self.config_file)

    def _prepare(self, config: Path) -> None:
        """Directories, the machine id, and the configuration file (see the module
        docstring); raises ``OSError`` naming the file, or ``SpawnError``."""
        system = self.mode is Mode.SYSTEM
        self.servicedir.mkdir(mode=0o755 if system else 0o700, parents=True, exist_ok=True)
        if system:
            SYSTEM_SOCKET.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            _ensure_machine_id()
        listening = self._standard_socket()
        if listening is not None and _listening(listening):
            raise process.SpawnError(
                f"a bus already listens at {listening}: stop it first, or run busmgr "
                "without --launch-bus on that bus"
            )
        text = _CONFIG.format(
            servicedir=xml_text(str(self.servicedir)), config=xml_text(str(config))
        )
        tmp = self.config_file.with_name(self.config_file.name + ".new")
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, self.config_file)

    def _standard_socket(self) -> Path | None:
        """The socket the daemon will listen on, when busmgr knows it."""
        if self.listen is not None and self.listen.startswith("unix:path="):
            return Path(self.listen.removeprefix("unix:path=").split(",", 1)[0])
        if self.mode is Mode.SYSTEM and self.config is None:
            return SYSTEM_SOCKET
        return None


def _listening(path: Path) -> bool:
    """Whether a server accepts connections at the unix socket ``path`` (a connect to a unix
    socket is answered at once: no waiting)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _ensure_machine_id() -> None:
    """Give the machine an id if it has none (``dbus-uuidgen --ensure``)."""
    for path in MACHINE_ID_FILES:
        with contextlib.suppress(OSError):
            if len(path.read_text().strip()) == 32:
                return
    path = MACHINE_ID_FILES[-1]
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(uuid.uuid4().hex + "\n")
    tmp.chmod(0o644)
    os.replace(tmp, path)


async def _first_line(fd: int) -> str:
    """The first line written to the pipe ``fd`` ('' at EOF), without blocking the loop;
    ``fd`` is closed on return."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    except BaseException:
        pipe.close()
        raise
    try:
        line = await reader.readline()
    finally:
        transport.close()
    return line.decode(errors="replace").strip()
