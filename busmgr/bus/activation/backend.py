"""What the composition root needs of an activation backend, whichever bus it serves.

A backend tells its bus daemon which names busmgr's jobs provide and turns the daemon's
activation requests into :meth:`busmgr.control.Control.activate_name` (through
:class:`~busmgr.bus.activation.requests.ActivationRequests`). The manager calls
:meth:`ActivationBackend.start` once, after it owns its own name; :meth:`refresh` after every
load of the job classes (on return the daemon knows every provided name); :meth:`close` when it
leaves. :data:`BackendFactory` is how the process's runtime chooses a backend without the
manager knowing which: it gets the pieces every backend needs and returns one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from busmgr.bus.activation.requests import ActivationRequests
from busmgr.bus.link import BusLink
from busmgr.config import Skipped
from busmgr.environment import Environment
from busmgr.jobclass import JobClass

__all__ = ["ActivationBackend", "BackendFactory"]


class ActivationBackend(Protocol):
    """One bus daemon's activation traffic."""

    mode: str

    async def start(self) -> str:
        """Begin answering the daemon; returns the mode, for the log."""
        ...

    async def refresh(
        self,
        classes: list[JobClass],
        units: Mapping[str, str],
        skipped: Iterable[Skipped],
    ) -> None:
        """Make the daemon's activatable names exactly those ``classes`` provide. ``units``
        map further systemd unit names to bus names (a daemon that activates through systemd
        asks for a unit); ``skipped`` are installed services that make no job, whose names and
        units are refused with the reason. A backend that never sees units ignores both."""
        ...

    def close(self) -> None:
        """The manager is leaving: undo what must not outlive it."""
        ...


BackendFactory = Callable[[BusLink, ActivationRequests, Environment], ActivationBackend]
