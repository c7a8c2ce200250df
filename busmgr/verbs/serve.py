"""``session`` and ``daemon``: the manager itself, run by :mod:`busmgr.runtime`.

Their parsed arguments become :mod:`busmgr.options` dataclasses (:func:`session_options`,
:func:`daemon_options`), handed over to :mod:`busmgr.runtime`, imported only then: the manager
is the one verb that needs asyncio, dbus-fast and the rest of busmgr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from busmgr.options import (
    DEFAULT_PHASE_TIMEOUT,
    DaemonOptions,
    DesktopOptions,
    Mode,
    SessionOptions,
)


def session_options(args: argparse.Namespace) -> SessionOptions:
    """The :class:`SessionOptions` that ``busmgr session`` was given."""
    return SessionOptions(
        services_dirs=tuple(d.absolute() for d in args.services_dirs),
        print_address=args.print_address,
        no_import=args.no_import,
        pidfile=_absolute(args.pidfile),
        state_dir=_absolute(args.state_dir),
        address_file=_absolute(args.address_file),
        command=tuple(args.command),
        desktop=None
        if args.desktop is None
        else DesktopOptions(args.desktop, args.phase_timeout or DEFAULT_PHASE_TIMEOUT),
        broker=args.broker,
        log_dir=_absolute(args.log_dir),
        log_max_bytes=args.log_size,
        log_keep=args.log_keep,
        import_dirs=tuple(d.absolute() for d in args.import_dirs),
    )


def daemon_options(args: argparse.Namespace) -> DaemonOptions:
    """The :class:`DaemonOptions` that ``busmgr daemon`` was given."""
    return DaemonOptions(
        mode=Mode.SYSTEM if args.bus == "system" else Mode.SESSION,
        address=args.address,
        services_dirs=tuple(d.absolute() for d in args.services_dirs),
        no_import=args.no_import,
        pidfile=_absolute(args.pidfile),
        state_dir=_absolute(args.state_dir),
        log_dir=_absolute(args.log_dir),
        log_max_bytes=args.log_size,
        log_keep=args.log_keep,
        launch_bus=args.launch_bus,
        bus_config=_absolute(args.bus_config),
        activation_dir=_absolute(args.activation_dir),
        import_dirs=tuple(d.absolute() for d in args.import_dirs),
        print_address=args.print_address,
        address_file=_absolute(args.address_file),
        broker=args.broker,
    )


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.absolute()


def _without_openssl() -> None:
    """Keep OpenSSL out of the manager process, before anything imports it.

    The manager never speaks TLS, yet asyncio imports ``ssl`` when it can (for TLS
    transports) and ``hashlib`` prefers OpenSSL's ``_hashlib``: mapping libssl and libcrypto
    costs the manager about 5 MiB of resident memory for nothing. Both work without them
    (asyncio then offers no TLS; ``hashlib`` uses its built-in SHA-256 for the cgroup name).
    Only the manager verbs do this: client verbs import neither asyncio nor hashlib."""
    for name in ("ssl", "_ssl", "_hashlib"):
        sys.modules.setdefault(name, None)  # type: ignore[assignment]


def run_session(args: argparse.Namespace) -> int:
    _without_openssl()
    from busmgr.runtime import run_session

    return run_session(session_options(args))


def run_daemon(args: argparse.Namespace) -> int:
    _without_openssl()
    from busmgr.runtime import run_daemon

    return run_daemon(daemon_options(args))
