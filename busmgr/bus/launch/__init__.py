"""Launching the bus itself: ``busmgr daemon --launch-bus`` on machines without systemd.

busmgr starts the bus daemon as its own supervised child and is its activator, so every
service the bus starts on demand is started (and supervised) by busmgr. One module per bus
implementation, all behind :class:`BusLauncher`:

* :mod:`~busmgr.bus.launch.dbus_daemon`: the reference ``dbus-daemon``, run with the machine's
  own configuration plus busmgr's service directory, read first.

A launcher only starts the daemon and says where it listens; the keeper
(:mod:`busmgr.keeper`) reaps it, launches it again where it listened if it dies (the jobs keep
running; a bus that keeps dying stops the manager), stops it after the jobs at shutdown, and
then calls :meth:`RunningBus.remove`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from busmgr.bus.launch.dbus_daemon import DbusDaemonLauncher, LaunchedBus, machine_config

__all__ = ["BusLauncher", "DbusDaemonLauncher", "LaunchedBus", "RunningBus", "machine_config"]


class RunningBus(Protocol):
    """A bus daemon busmgr started: where it listens, its pid, the directory its activation
    files go to (read by the daemon), and the clean-up once it has exited."""

    @property
    def address(self) -> str: ...

    @property
    def pid(self) -> int: ...

    @property
    def servicedir(self) -> Path: ...

    def remove(self) -> None: ...


class BusLauncher(Protocol):
    """Starts one bus daemon."""

    async def launch(self, environ: Mapping[str, str], watch: Callable[[int], None]) -> RunningBus:
        """Start the daemon and return once it listens. ``watch(pid)`` is called right after
        the spawn, so the caller's reaper owns the pid before anything can happen to it.
        Raises :class:`busmgr.process.SpawnError` (one line) when it cannot start."""
        ...

    def taken_back(self, address: str, pid: int) -> RunningBus:
        """The daemon a previous image (or a manager that crashed) of busmgr launched, still
        running as ``pid`` at ``address``: the same bus as :meth:`launch` would return."""
        ...
