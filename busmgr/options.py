"""What the ``busmgr session`` and ``busmgr daemon`` command lines ask the manager to do.

The command line (:mod:`busmgr.cli`) parses argv into one of these frozen dataclasses and hands
it to :func:`busmgr.runtime.run_session` or :func:`busmgr.runtime.run_daemon`; nothing else
crosses that seam, so the manager can be driven from tests without argv.

:class:`Mode` is the one spelling of session versus system mode: the manager's policy (caller
uid checks, job file ownership checks, the job environment, default directories) follows it.
Which bus the manager talks to is a separate choice: the mode's standard bus, an explicit
address, or a private bus the manager starts itself.

Defaults are left unresolved on purpose: an empty ``services_dirs`` and a ``None`` ``state_dir``
mean "the default of the mode" (SPEC §1), which depends on the mode and on the environment the
manager starts with. :func:`default_services_dirs`, :func:`default_state_dir` and
:func:`default_log_dir` compute those defaults, so the manager and ``busmgr check`` agree.
Paths given on the command line are made absolute (never symlink-resolved) when parsed,
because the manager may change directory or re-execute itself.

The addresses of the standard buses are resolved here and nowhere else
(:func:`system_bus_address`, :func:`session_bus_address`).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SYSTEM_SERVICES_DIR = Path("/etc/busmgr/services.d")
SYSTEM_STATE_DIR = Path("/var/lib/busmgr")
SYSTEM_LOG_DIR = Path("/var/log/busmgr")
DEFAULT_SYSTEM_BUS_ADDRESS = "unix:path=/run/dbus/system_bus_socket"
#: Where busmgr writes the D-Bus activation files of its jobs on the system bus; the shipped
#: policy ``dbus-policy/busmgr-activation.conf`` makes the bus read it.
SYSTEM_ACTIVATION_DIR = Path("/run/busmgr/system-services")


class Mode(enum.Enum):
    """Session mode (one user's jobs) or system mode (root's jobs, callers checked)."""

    SESSION = "session"
    SYSTEM = "system"


def system_bus_address(environ: Mapping[str, str]) -> str:
    """The system bus: ``$DBUS_SYSTEM_BUS_ADDRESS``, else the well-known socket (D-Bus spec)."""
    return environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS_ADDRESS


def session_bus_address(environ: Mapping[str, str]) -> str | None:
    """The session bus: ``$DBUS_SESSION_BUS_ADDRESS``, or None when it is not set."""
    return environ.get("DBUS_SESSION_BUS_ADDRESS") or None


def standard_bus_address(mode: Mode, environ: Mapping[str, str]) -> str | None:
    """The address of ``mode``'s standard bus (None: a session bus nobody told us about)."""
    if mode is Mode.SYSTEM:
        return system_bus_address(environ)
    return session_bus_address(environ)


#: Seconds a desktop phase waits for the services of the one before it (``--phase-timeout``).
DEFAULT_PHASE_TIMEOUT = 10.0


def desktop_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be ``$XDG_CURRENT_DESKTOP`` (a ``:``-separated list of desktop
    names, each non-empty, printable, without blanks, ``;`` or ``=``), or None."""
    for part in name.split(":"):
        if not part:
            return f"{name!r}: an empty desktop name (the list is separated by ':')"
        if any(ch.isspace() or not ch.isprintable() or ch in ";=" for ch in part):
            return f"{name!r}: a desktop name has no blanks, control characters, ';' or '='"
    return None


@dataclass(frozen=True)
class DesktopOptions:
    """``busmgr session --desktop NAME``: a desktop session (:mod:`busmgr.desktop`).

    ``name`` becomes ``$XDG_CURRENT_DESKTOP``; ``phase_timeout`` bounds the wait of each phase
    for the services of the one before it.
    """

    name: str
    phase_timeout: float = DEFAULT_PHASE_TIMEOUT

    def __post_init__(self) -> None:
        problem = desktop_name_problem(self.name)
        if problem is not None:
            raise ValueError(problem)
        if not (0 < self.phase_timeout < float("inf")):
            raise ValueError("the phase timeout must be a positive number of seconds")


@dataclass(frozen=True)
class SessionOptions:
    """``busmgr session``: a private ``dbus-daemon`` with the manager on it.

    ``command`` is empty for a plain session; otherwise the session runs it (``-- COMMAND ARGS``)
    and ends, with its exit status, when it exits. ``desktop`` makes it a desktop session.
    ``broker``: the private bus is dbus-broker, launched by busmgr, instead of dbus-daemon.
    """

    services_dirs: tuple[Path, ...] = ()
    print_address: bool = False
    no_import: bool = False
    pidfile: Path | None = None
    state_dir: Path | None = None
    address_file: Path | None = None
    command: tuple[str, ...] = ()
    desktop: DesktopOptions | None = None
    broker: bool = False
    log_dir: Path | None = None
    log_max_bytes: int | None = None
    log_keep: int | None = None
    import_dirs: tuple[Path, ...] = ()


@dataclass(frozen=True)
class DaemonOptions:
    """``busmgr daemon``: the manager on an existing bus.

    ``mode`` is session or system mode; ``address`` is the bus to use, or None for the mode's
    standard bus (:func:`standard_bus_address`). ``--address ADDR`` alone is session mode on
    that bus. With ``launch_bus`` the manager starts the mode's bus itself (from the machine's
    configuration, or ``bus_config``) and is its activator; ``broker``: that bus is
    dbus-broker, busmgr its launcher. ``activation_dir`` is where the
    activation files of the jobs go (None: :func:`default_activation_dir`); ``import_dirs``
    where the installed D-Bus services are (empty: the mode's standard directories).
    """

    mode: Mode
    address: str | None = None
    services_dirs: tuple[Path, ...] = ()
    no_import: bool = False
    pidfile: Path | None = None
    state_dir: Path | None = None
    log_dir: Path | None = None
    log_max_bytes: int | None = None
    log_keep: int | None = None
    launch_bus: bool = False
    bus_config: Path | None = None
    activation_dir: Path | None = None
    import_dirs: tuple[Path, ...] = ()
    print_address: bool = False
    address_file: Path | None = None
    broker: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.mode, Mode):
            raise ValueError(f"mode must be a Mode, not {self.mode!r}")
        if self.address is not None and not self.address:
            raise ValueError("an explicit bus address cannot be empty")
        if self.broker and not self.launch_bus:
            raise ValueError("--broker is the bus busmgr launches: give --launch-bus too")
        if self.launch_bus and self.address is not None:
            raise ValueError("--launch-bus starts the bus itself: it takes no --address")
        if self.bus_config is not None and not self.launch_bus:
            raise ValueError("--bus-config is the configuration of a bus busmgr launches")


def _xdg_dir(environ: Mapping[str, str], variable: str, fallback: str) -> Path:
    """``$variable``, or ``$HOME/fallback`` when unset, empty or relative (XDG base directory
    specification: relative values are invalid and must be ignored)."""
    value = environ.get(variable, "")
    if value and os.path.isabs(value):
        return Path(value)
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(home) / fallback


def xdg_config_home(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME``, or ``$HOME/.config`` when unset, empty or relative."""
    return _xdg_dir(environ, "XDG_CONFIG_HOME", ".config")


def default_services_dirs(mode: Mode, environ: Mapping[str, str]) -> tuple[Path, ...]:
    """The job directories when no ``--services-dir`` is given."""
    if mode is Mode.SYSTEM:
        return (SYSTEM_SERVICES_DIR,)
    return (xdg_config_home(environ) / "busmgr" / "services.d",)


def default_activation_dir(mode: Mode, environ: Mapping[str, str]) -> Path | None:
    """Where activation files of the jobs go on the mode's standard bus: the system bus reads
    :data:`SYSTEM_ACTIVATION_DIR` (with busmgr's policy file installed); a session bus reads
    ``$XDG_RUNTIME_DIR/dbus-1/services`` (None when that is not set)."""
    if mode is Mode.SYSTEM:
        return SYSTEM_ACTIVATION_DIR
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    return Path(runtime) / "dbus-1" / "services" if os.path.isabs(runtime) else None


def default_state_dir(mode: Mode, environ: Mapping[str, str]) -> Path:
    """The state directory when no ``--state-dir`` is given."""
    if mode is Mode.SYSTEM:
        return SYSTEM_STATE_DIR
    return _xdg_dir(environ, "XDG_STATE_HOME", ".local/state") / "busmgr"


def default_log_dir(mode: Mode, environ: Mapping[str, str], state_dir: Path | None) -> Path:
    """The job log directory when no ``--log-dir`` is given: ``log`` in the state directory
    (``$XDG_STATE_HOME/busmgr/log`` by default), except that system mode with the default
    state directory logs to ``/var/log/busmgr``."""
    if mode is Mode.SYSTEM and state_dir is None:
        return SYSTEM_LOG_DIR
    return (state_dir or default_state_dir(mode, environ)) / "log"
