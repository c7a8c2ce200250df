"""Activation requests, whatever the backend: merge them, start the job, report the outcome.

A bus daemon holds every caller that needs a name until the name has an owner or the activation
failed; it sends its activator one request per name (dbus-daemon merges concurrent callers;
requests may still repeat while one is under way). :class:`ActivationRequests` starts the
providing job once per key while a start is under way, and calls the backend's ``failed``
callback with the SPEC §3 error name and busmgr's reason when it fails, so the backend tells the
daemon at once and the callers hear why (SPEC §4: never after the bus's own timeout).

Invariant: every request ends in exactly one of "merged into one under way", success (the name
has an owner: the daemon delivers), or one ``failed`` call; an unexpected exception counts as a
failure with its text, never as silence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from busmgr import ERROR_PREFIX
from busmgr.errors import ManagerError
from busmgr.job import Job

log = logging.getLogger("busmgr")

__all__ = ["ActivationRequests", "Activator", "Failed"]


class Activator(Protocol):
    """What starts a provider (:meth:`busmgr.control.Control.activate_name`)."""

    async def activate_name(self, bus_name: str) -> Job: ...


@dataclass(frozen=True, slots=True)
class Failed:
    """Why an activation failed: a D-Bus error name and busmgr's message."""

    error: str
    message: str


class ActivationRequests:
    """One start per key (a unit, or a bus name) at a time; failures reported."""

    def __init__(self, activator: Activator) -> None:
        self._activator = activator
        self._pending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def pending(self, key: str) -> bool:
        return key in self._pending

    def request(self, key: str, bus_name: str, failed: Callable[[Failed], None]) -> None:
        """Start the provider of ``bus_name`` unless a start for ``key`` is under way."""
        if key in self._pending:
            return  # one activation serves every caller the daemon holds for this name
        self._pending.add(key)
        task = asyncio.get_running_loop().create_task(self._run(key, bus_name, failed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: str, bus_name: str, failed: Callable[[Failed], None]) -> None:
        try:
            await self._activator.activate_name(bus_name)
        except ManagerError as err:  # activate_name logged it
            failed(Failed(ERROR_PREFIX + err.name, err.message))
        except Exception as err:  # never leave the daemon's callers hanging
            log.error("activation of %s failed: %s", bus_name, err, exc_info=err)
            failed(Failed(ERROR_PREFIX + "JobFailed", f"{bus_name}: {err}"))
        finally:
            self._pending.discard(key)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
