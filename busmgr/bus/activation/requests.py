"""Activation requests, whatever the backend: merge them, start the job, report the outcome.

A bus daemon holds every caller that needs a name until the name has an owner or the activation
failed; it sends its activator one request per name (dbus-daemon merges concurrent callers;
requests may still repeat while one is under way). :class:`ActivationRequests` starts the
providing job once per key while a start is under way, and calls the backend's ``failed``
callback with the SPEC §3 error name and busmgr's reason when it fails, so the backend tells the
daemon at once and the callers hear why (SPEC §4: never after the bus's own timeout).

Invariant: every request ends in exactly one of "merged into one under way", success (the name
has an owner: the daemon delivers), or one ``failed`` call; an unexpected exception counts as a
failure with its text, never as silence. A failure is reported only if the bus says the name
has no owner at that moment: once it has one, the daemon has delivered the waiting calls, and
a failure sent then would fail the *next* activation of the name (a wrapper that exits once
another process owns the name; a job stopped as soon as it was ready; the manager hearing of a
process's exit before it hears of its name).

How long a request may take is the activator's business
(:attr:`busmgr.control.Control.activation_patience`, from :mod:`busmgr.bus.patience`): it fails
the request with its reason before the bus or the caller gives up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from busmgr import ERROR_PREFIX, trace
from busmgr.errors import ManagerError

log = logging.getLogger("busmgr")

__all__ = ["ActivationRequests", "Activator", "Failed"]


class Activator(Protocol):
    """What starts a provider (:meth:`busmgr.control.Control.activate_name`)."""

    async def activate_name(self, bus_name: str, *, quiet: bool = False) -> tuple[str, str]: ...


@dataclass(frozen=True, slots=True)
class Failed:
    """Why an activation failed: a D-Bus error name and busmgr's message."""

    error: str
    message: str


@dataclass
class _Request:
    """One activation under way: for ``bus_name``; ``satisfied`` once the name had an owner
    (the bus daemon has then delivered the waiting callers' messages)."""

    bus_name: str
    satisfied: bool = False


class ActivationRequests:
    """One start per key (a unit, or a bus name) at a time; failures reported, unless the name
    had an owner meanwhile.

    Once the bus name has an owner, the daemon has delivered the callers' messages: that
    activation is over for the daemon, whatever happens to the job afterwards (stopped right
    away, or a wrapper that exits once the real service owns the name). A failure of its start
    is then not reported (the daemon would apply it to the *next* activation of the name), and
    a new request starts a new activation instead of being merged into the old one.
    """

    def __init__(
        self, activator: Activator, has_owner: Callable[[str], Awaitable[bool]] | None = None
    ) -> None:
        """``has_owner(name)`` asks the bus whether ``name`` has an owner now."""
        self._activator = activator
        self._has_owner = has_owner
        self._pending: dict[str, _Request] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def pending(self, key: str) -> bool:
        request = self._pending.get(key)
        return request is not None and not request.satisfied

    def request(self, key: str, bus_name: str, failed: Callable[[Failed], None]) -> None:
        """Start the provider of ``bus_name`` unless a start for ``key`` is under way."""
        if trace.ON:
            trace.begin(bus_name)
        if self.pending(key):
            return  # one activation serves every caller the daemon holds for this name
        request = self._pending[key] = _Request(bus_name)
        task = asyncio.get_running_loop().create_task(self._run(key, request, failed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def name_owned(self, bus_name: str) -> None:
        """``bus_name`` has an owner now: the activations of it under way are satisfied."""
        for request in self._pending.values():
            if request.bus_name == bus_name:
                request.satisfied = True

    async def _run(self, key: str, request: _Request, failed: Callable[[Failed], None]) -> None:
        outcome: Failed | None = None
        try:
            try:
                await self._activator.activate_name(request.bus_name, quiet=True)
            except ManagerError as err:
                outcome = Failed(ERROR_PREFIX + err.name, err.message)
            except Exception as err:  # never leave the daemon's callers hanging
                log.error("activation of %s failed: %s", request.bus_name, err, exc_info=err)
                outcome = Failed(ERROR_PREFIX + "JobFailed", f"{request.bus_name}: {err}")
            if outcome is not None and not request.satisfied and self._has_owner is not None:
                # Still pending meanwhile: a request that arrives now joins this one.
                try:
                    request.satisfied = await self._has_owner(request.bus_name)
                except Exception as err:  # the bus cannot answer: report what busmgr knows
                    log.warning("cannot ask the bus for the owner of %s: %s", request.bus_name, err)
        finally:
            if self._pending.get(key) is request:
                del self._pending[key]
        if trace.ON:
            trace.end(request.bus_name, outcome.message if outcome else "ok")
        if outcome is not None:
            if request.satisfied:
                log.info(
                    "%s had an owner, so its callers were served (no activation failure "
                    "reported); its job did not stay up: %s",
                    request.bus_name,
                    outcome.message,
                )
            else:
                log.warning("activation of %s failed: %s", request.bus_name, outcome.message)
                failed(outcome)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
