"""The private ``dbus-daemon`` that ``busmgr session`` starts and configures itself.

Model: one directory (mode 0700, under ``$XDG_RUNTIME_DIR`` or a temp dir) holds the bus
socket, the daemon's configuration and the service directory busmgr writes activation files
into. The daemon runs with ``--systemd-activation`` so that activation requests for names a job
provides come to busmgr (which owns ``org.freedesktop.systemd1`` on it) instead of being spawned
by the daemon. Its policy lets the session's user do everything, sending and receiving alike
(a policy without a receive rule makes clients hang at ``Hello``).

The daemon watches the service directory with inotify, but only for closed writes, moves and
deletions: the activation bridge links finished files into it and then calls ``ReloadConfig``
once, so a start-up with any number of activatable jobs costs the daemon one reload.

The daemon is a child of the manager like any job process: :mod:`busmgr.process` spawns it
and the one reaper reaps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from busmgr import process
from busmgr.jobclass import ConsoleMode, ExecContext


def xml_text(text: str) -> str:
    """``text`` as XML character data (``&``, ``<``, ``>`` escaped), as
    ``xml.sax.saxutils.escape`` does, without importing urllib.request, http and email with
    it (2 MiB of the manager's memory, milliseconds of a session's start-up)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


DBUS_DAEMON = "dbus-daemon"
CONFIG_FILE = "bus.conf"

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{servicedir}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="reply_timeout">300000</limit>
</busconfig>
"""


@dataclass
class PrivateBus:
    """A running private bus: its address, pid and directory. ``remove()`` deletes the
    directory once the daemon is gone."""

    address: str
    pid: int
    directory: Path
    servicedir: Path

    @property
    def config(self) -> Path:
        """The daemon's configuration file."""
        return self.directory / CONFIG_FILE

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def make_bus_directory(environ: dict[str, str]) -> Path:
    """A fresh 0700 directory for the bus, under ``$XDG_RUNTIME_DIR`` when it is usable."""
    base = environ.get("XDG_RUNTIME_DIR")
    if not base or not os.path.isdir(base) or not os.access(base, os.W_OK):
        base = None
    return Path(tempfile.mkdtemp(prefix="busmgr-", dir=base))


def write_config(directory: Path) -> tuple[Path, Path, Path]:
    """Write the daemon's configuration; returns (config, socket, servicedir) paths."""
    servicedir = directory / "services"
    servicedir.mkdir(mode=0o700, exist_ok=True)
    socket = directory / "bus"
    config = directory / CONFIG_FILE
    config.write_text(
        _CONFIG.format(socket=xml_text(str(socket)), servicedir=xml_text(str(servicedir)))
    )
    return config, socket, servicedir


async def start_private_bus(
    environ: dict[str, str],
    *,
    timeout: float = 10.0,
    watch: Callable[[int], None] | None = None,
    directory: Path | None = None,
) -> PrivateBus:
    """Start ``dbus-daemon`` and return once it listens (it prints its address then).

    ``watch(pid)`` is called right after the spawn so the caller's reaper owns the pid before
    anything can happen to it. ``directory``: the directory of a bus that went away, so the new
    one listens at the same address (the jobs' ``DBUS_SESSION_BUS_ADDRESS`` stays right).
    """
    daemon = shutil.which(DBUS_DAEMON, path=environ.get("PATH", os.defpath))
    if daemon is None:
        raise process.SpawnError(
            f'exec "{DBUS_DAEMON}": not found in PATH; install the Debian package dbus-daemon'
        )
    if directory is None:
        directory = make_bus_directory(environ)
    config, socket_path, servicedir = write_config(directory)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()  # the dead bus's socket: the new one binds the same path
    read_fd, write_fd = os.pipe()
    try:
        argv = [
            daemon,
            f"--config-file={config}",
            "--nofork",
            "--nopidfile",
            "--systemd-activation",
            f"--print-address={write_fd}",
        ]
        env = {k: v for k, v in environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
        pid = process.spawn(
            argv,
            env,
            ExecContext(console=ConsoleMode.OUTPUT),
            pass_fds=(write_fd,),
            quiet_stdout=True,  # it says nothing there; it must not hold the manager's stdout
        )
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    os.close(write_fd)
    if watch is not None:
        watch(pid)
    try:
        address = await asyncio.wait_for(_read_line(read_fd), timeout)
    finally:
        os.close(read_fd)
    if not address:
        shutil.rmtree(directory, ignore_errors=True)
        raise process.SpawnError(f"dbus-daemon (pid {pid}) exited before printing its address")
    return PrivateBus(address=address, pid=pid, directory=directory, servicedir=servicedir)


async def _read_line(fd: int) -> str:
    """Read one line from ``fd`` without blocking the loop ('' on EOF)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    buf = b""
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        nonlocal buf
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        buf += chunk
        if not chunk or b"\n" in buf:
            loop.remove_reader(fd)
            if not done.done():
                done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return buf.split(b"\n", 1)[0].decode().strip()
