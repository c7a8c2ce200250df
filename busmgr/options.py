"""What the ``busmgr session`` and ``busmgr daemon`` command lines ask the manager to do.

The command line (:mod:`busmgr.cli`) parses argv into one of these frozen dataclasses and hands
it to :func:`busmgr.manager.run_session` or :func:`busmgr.manager.run_daemon`; nothing else
crosses that seam, so the manager can be driven from tests without argv.

Defaults are left unresolved on purpose: an empty ``services_dirs`` and a ``None`` ``state_dir``
mean "the default of the mode" (SPEC §1), which depends on whether the manager runs in system mode
and on the environment it starts with. :func:`default_services_dirs` and
:func:`default_state_dir` compute those defaults, so the manager and ``busmgr check`` agree.
Paths given on the command line are made absolute (never symlink-resolved) when parsed, because
the manager may change directory or re-execute itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

BusKind = Literal["session", "system", "address"]

SYSTEM_SERVICES_DIR = Path("/etc/busmgr/services.d")
SYSTEM_STATE_DIR = Path("/var/lib/busmgr")


@dataclass(frozen=True)
class SessionOptions:
    """``busmgr session``: a private ``dbus-daemon`` with the manager on it.

    ``command`` is empty for a plain session; otherwise the session runs it (``-- COMMAND ARGS``)
    and ends, with its exit status, when it exits.
    """

    services_dirs: tuple[Path, ...] = ()
    print_address: bool = False
    no_import: bool = False
    pidfile: Path | None = None
    state_dir: Path | None = None
    address_file: Path | None = None
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class DaemonOptions:
    """``busmgr daemon``: the manager on an existing bus.

    ``bus`` is ``"session"`` (``DBUS_SESSION_BUS_ADDRESS``), ``"system"`` (system mode; the
    address from ``DBUS_SYSTEM_BUS_ADDRESS`` or the well-known socket) or ``"address"``, in which
    case ``address`` holds the bus address and is never ``None``.
    """

    bus: BusKind
    address: str | None = None
    services_dirs: tuple[Path, ...] = ()
    no_import: bool = False
    pidfile: Path | None = None
    state_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.bus not in ("session", "system", "address"):
            raise ValueError(f"bus must be session, system or address, not {self.bus!r}")
        if (self.bus == "address") != (self.address is not None):
            raise ValueError("address is given exactly when bus is 'address'")


def _xdg_dir(environ: Mapping[str, str], variable: str, fallback: str) -> Path:
    """``$variable``, or ``$HOME/fallback`` when unset, empty or relative (XDG base directory
    specification: relative values are invalid and must be ignored)."""
    value = environ.get(variable, "")
    if value and os.path.isabs(value):
        return Path(value)
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(home) / fallback


def default_services_dirs(system: bool, environ: Mapping[str, str]) -> tuple[Path, ...]:
    """The job directories when no ``--services-dir`` is given."""
    if system:
        return (SYSTEM_SERVICES_DIR,)
    return (_xdg_dir(environ, "XDG_CONFIG_HOME", ".config") / "busmgr" / "services.d",)


def default_state_dir(system: bool, environ: Mapping[str, str]) -> Path:
    """The state directory when no ``--state-dir`` is given."""
    if system:
        return SYSTEM_STATE_DIR
    return _xdg_dir(environ, "XDG_STATE_HOME", ".local/state") / "busmgr"
