"""The face's outgoing signals: queued in order, flushed once per loop turn, held while a
``dbus`` job rises.

Signals are not sent in the middle of a transition: the face (:class:`busmgr.bus.face.BusFace`)
queues lifecycle signals and marks changed instances here, and :class:`SignalQueue` flushes
once per loop turn, in the order things happened (systemd's ``unit_add_to_dbus_queue``). A
changed instance is queued once until it is flushed; its ``PropertiesChanged`` carries the
values of the moment of the flush. A flush sends for at most :data:`FLUSH_SLICE` seconds: the
rest goes out on the next turn, still in order.

One exception to "once per loop turn": while a ``dbus`` job is on its way up (goal start, from
``waiting`` to ``spawned``: :func:`on_its_way_up`), the flush waits until no such job is left,
at most :data:`HOLD` seconds. An activation's caller waits for the service to claim its name,
and the bus daemon must route the service's ``Hello`` and ``RequestName`` meanwhile: signals
sent then (building them, and the daemon routing them) would take the cores the spawn and the
service need. They go out a few milliseconds later, in order, with the values of that moment.

Invariants: at most one flush is scheduled at a time; nothing is sent out of order or dropped
(but the properties of an instance the face forgot); the hold never outlasts :data:`HOLD`
seconds from the first job that rose, and ends at once when the last rising job is up or gone.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any

from busmgr.job import Goal, Job, State

__all__ = ["FLUSH_SLICE", "HOLD", "SignalQueue", "on_its_way_up"]

#: Seconds of signal sending per loop turn (see :meth:`SignalQueue.flush`).
FLUSH_SLICE = 0.02
#: Seconds at most that signals wait while a ``dbus`` job is on its way up (module docstring).
HOLD = 0.05
#: The states of a job on its way up to running, before it is ready.
_ON_THE_WAY = frozenset({State.WAITING, State.STARTING, State.PRE_START, State.SPAWNED})


def on_its_way_up(job: Job) -> bool:
    """``job`` is a ``dbus`` job on its way up: the signals wait for it (module docstring)."""
    return bool(job.jobclass.dbus_name) and job.goal is not Goal.STOP and job.state in _ON_THE_WAY


class SignalQueue:
    """Lifecycle signals and changed instances, in order, until the flush of the loop turn."""

    def __init__(
        self,
        send_signal: Callable[[str, list[Any]], None],
        send_properties: Callable[[Job], None],
    ) -> None:
        self._send_signal = send_signal
        self._send_properties = send_properties
        self._queue: list[tuple[str, Any]] = []
        self._dirty: set[Job] = set()
        self._scheduled = False
        self._rising: set[Job] = set()  # dbus jobs on their way up: the flush is held
        self._hold_until: float | None = None  # loop time the hold ends at the latest
        self._held: asyncio.TimerHandle | None = None  # the held flush

    def signal(self, member: str, body: list[Any]) -> None:
        """Queue the manager's signal ``member`` with ``body``."""
        self._enqueue("signal", (member, body))

    def changed(self, job: Job) -> None:
        """Queue the ``PropertiesChanged`` of ``job`` (once until the flush)."""
        if job not in self._dirty:
            self._dirty.add(job)
            self._enqueue("props", job)

    def forget(self, job: Job) -> None:
        """``job`` is gone: no properties of it to send, no hold for it."""
        self._dirty.discard(job)
        self.release(job)

    def hold_for(self, job: Job) -> None:
        """``job`` is on its way up: the first one starts the hold."""
        if not self._rising:
            self._hold_until = asyncio.get_running_loop().time() + HOLD
        self._rising.add(job)

    def release(self, job: Job) -> None:
        """``job`` is no longer on its way up: the last one lets the held flush go."""
        if job not in self._rising:
            return
        self._rising.discard(job)
        if not self._rising:
            self._hold_until = None
            if self._held is not None:
                self._held.cancel()
                self._held = None
                asyncio.get_running_loop().call_soon(self.flush)

    def _enqueue(self, kind: str, item: Any) -> None:
        self._queue.append((kind, item))
        if not self._scheduled:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            if self._hold_until is not None:
                self._held = loop.call_at(self._hold_until, self.flush)
            else:
                loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send everything queued, in order. Runs once per loop turn that queued something
        (or when a hold ends, see the module docstring), for at most :data:`FLUSH_SLICE`
        seconds: the rest goes out on the next turn, in order."""
        self._scheduled = False
        self._held = None
        queue, self._queue = self._queue, []
        deadline = time.monotonic() + FLUSH_SLICE
        for index, (kind, item) in enumerate(queue):
            if time.monotonic() > deadline:
                self._queue = queue[index:] + self._queue
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self.flush)
                return
            if kind == "signal":
                member, body = item
                self._send_signal(member, body)
            else:
                self._dirty.discard(item)
                self._send_properties(item)
