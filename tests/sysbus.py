"""Private system-type buses for the system mode tests, built from Debian's stock policy.

:func:`stock_config` adapts ``/usr/share/dbus-1/system.conf`` (package
``dbus-system-bus-common``) to a test: the bus listens on a socket in the test's directory,
runs as the test's user, in the foreground, without a pidfile or syslog, and reads the service
directories and the policy files the test names instead of the machine's (an ``includedir``
of the real ``/usr/share/dbus-1/system.d`` keeps the stock policy of the installed services).
Everything else (the default deny of method calls and name ownership, the root-only
``Activator`` interface, the denied ``UpdateActivationEnvironment``) is the stock file's.

:func:`shipped_policy` copies the repository's ``dbus-policy/`` files into a directory, with
busmgr's activation directory pointed at the test's own.

The directories are made world-traversable (0755): clients run as ``nobody`` must reach the
socket, and ``nobody``'s services must reach their programs.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from busmgr.options import SYSTEM_ACTIVATION_DIR

from conftest import BLOCKED_LIMIT, HELPERS, TIMEOUT

REPO = Path(__file__).resolve().parent.parent
STOCK_CONFIG = Path("/usr/share/dbus-1/system.conf")
STOCK_POLICY_DIR = Path("/usr/share/dbus-1/system.d")
SYSTEM_PYTHON = "/usr/bin/python3"
SYSTEM_SERVICE = HELPERS / "system_service.py"
# What the test's bus says itself instead of the stock file, or not at all.
_DROPPED = frozenset(
    {"user", "fork", "pidfile", "syslog", "includedir", "include", "listen",
     "standard_system_servicedirs"}
)  # fmt: skip


def world_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that every user may traverse (pytest's are root-only)."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    return directory


def stock_config(
    socket: Path, servicedirs: Iterable[Path], policy: Iterable[Path], path: Path
) -> Path:
    """Write the stock system bus configuration adapted to a test (see the module docstring)
    to ``path``: listening on ``socket``, reading ``servicedirs`` and including the policy
    files or directories ``policy``, in that order."""
    tree = ET.parse(STOCK_CONFIG)
    root = tree.getroot()
    for child in list(root):
        if child.tag in _DROPPED:
            root.remove(child)
    listen = ET.SubElement(root, "listen")
    listen.text = f"unix:path={socket}"
    for directory in servicedirs:
        ET.SubElement(root, "servicedir").text = str(directory)
    for item in policy:
        ET.SubElement(root, "includedir" if item.is_dir() else "include").text = str(item)
    tree.write(path, encoding="unicode")
    return path


def shipped_policy(target: Path, activation_dir: Path, files: Iterable[str]) -> Path:
    """Copy the named ``dbus-policy/`` files to ``target``, busmgr's activation directory
    replaced by ``activation_dir``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in files:
        text = (REPO / "dbus-policy" / name).read_text()
        (target / name).write_text(text.replace(str(SYSTEM_ACTIVATION_DIR), str(activation_dir)))
    return target


def services_policy(target: Path, names: Iterable[str]) -> Path:
    """A package's policy file for the test services: anyone may own and call ``names`` (the
    test's services run as ``nobody``)."""
    rules = "".join(f'<allow own="{n}"/><allow send_destination="{n}"/>' for n in names)
    path = target / "busmgr-tests.conf"
    path.write_text(f'<busconfig><policy context="default">{rules}</policy></busconfig>\n')
    return path


def service_file(directory: Path, name: str, user: str, unit: str = "") -> Path:
    """An installed system service for ``helpers/system_service.py`` owning ``name``, as a
    package would install it."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "[D-BUS Service]",
        f"Name={name}",
        f"Exec={SYSTEM_PYTHON} {SYSTEM_SERVICE} {name}",
        f"User={user}",
    ]
    if unit:
        lines.append(f"SystemdService={unit}")
    path = directory / f"{name}.service"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Bus:
    """A running test bus: its daemon and address; its log is ``stderr``."""

    proc: asyncio.subprocess.Process
    address: str
    stderr: Path

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.proc.wait(), TIMEOUT)


async def start_bus(config: Path, stderr: Path, *, systemd_activation: bool = True) -> Bus:
    """Start a dbus-daemon with ``config``; return once it listens."""
    argv = ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile"]
    if systemd_activation:
        argv.append("--systemd-activation")
    with open(stderr, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv, "--print-address=1", stdout=asyncio.subprocess.PIPE, stderr=err
        )
    assert proc.stdout is not None
    address = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode().strip()
    assert address, f"dbus-daemon did not start: {stderr.read_text()}"
    return Bus(proc, address, stderr)


@dataclass
class Manager:
    """A running ``busmgr daemon --system``; its log is ``stderr``."""

    proc: asyncio.subprocess.Process
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 60)


def manager_env(address: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBUS_", "XDG_RUNTIME"))}
    env["DBUS_SYSTEM_BUS_ADDRESS"] = address
    env.setdefault("BUSMGR_LOG_LEVEL", "INFO")
    # The manager's slow-callback watch (see conftest): its reports fail the test.
    env.setdefault("BUSMGR_LOOP_DEBUG", str(BLOCKED_LIMIT))
    return env


def loop_blocked(log: str) -> list[str]:
    """The manager's reports of a callback that held its loop too long (empty: none)."""
    return [line for line in log.splitlines() if "Executing " in line and " took " in line]


async def start_manager(address: str, args: list[str], stderr: Path) -> Manager:
    """Start ``busmgr daemon --system --print-address ARGS`` on the bus at ``address``; return
    once it is ready (it printed the address: its name is owned, its jobs loaded, activation
    set up), or once it exited (the caller looks at the exit status)."""
    with open(stderr, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "busmgr", "daemon", "--system", "--print-address", *args,
            env=manager_env(address), stderr=err, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
    if line:
        assert line.decode().strip() == address
    return Manager(proc, stderr)


async def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a program to its end: (status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    return proc.returncode or 0, out.decode(), err.decode()


def as_user(user: str, *argv: str) -> list[str]:
    """``argv`` run as ``user`` with that user's group and no others (setpriv, util-linux)."""
    pw = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", *argv]
