"""The event queue: events are handled one at a time, in the order they were emitted, and an
event is *finished* only when every job it started or stopped has got where it was sent.

Model (Upstart 0.5, "Events"): handling an event may change the goal of jobs; each such job
holds the event's :class:`Block` until it reaches the rest state of that goal (running for a
started service, waiting for a task or a stop). When the last holder lets go, the block is
finished: whoever emitted the event is told, with ``failed`` True if any job it affected
failed. A ``starting`` or ``stopping`` job event blocks the job that emitted it this way, which
is how ``start on starting nfs-server`` makes nfs-server wait for portmap.

A job holds the blocks of the events that last changed its goal (Upstart's ``job->blocking``).
When a later event changes its goal again, :meth:`EventQueue.release_held` lets go of the older
blocks first, as successes (Upstart's ``job_finished (job, FALSE)``): the job will never get
where those events sent it, and an event must not wait for ever on a wish that was overruled
(``stop on stopping dbus`` must not leave dbus stuck in ``stopping`` because hal was started
again meanwhile).

Invariants: :meth:`EventQueue.emit` never handles an event re-entrantly; handling happens on a
later loop turn, so a job changing state inside a handler cannot recurse into the queue. Events
are handled in emission order, a bounded time slice per loop turn. A
handler that raises is a bug: the exception goes to ``on_error`` (the manager treats it as
fatal; by default it is logged), the event counts as handled, and the events queued after it
are still handled, in order. Each release function acts once; releasing an already released
hold (the job got there after all) does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable

from busmgr.events import Event

log = logging.getLogger("busmgr")

Release = Callable[[str | None], None]

#: Seconds of event handling per loop turn before the queue lets other callbacks run.
SLICE = 0.02


def _log_error(event: Event, err: Exception) -> None:
    log.error("internal error while handling event %s: %s", event, err, exc_info=err)


class Block:
    """The jobs an event is waiting for. ``finished`` callbacks run once, when none is left.

    ``failures`` holds one description per job that failed to get where the event sent it
    (naming the job); ``done`` becomes True once, after the handler ran and every hold was
    released.
    """

    def __init__(self, event: Event) -> None:
        self.event = event
        self.holders = 0
        self.held = 0  # holds ever taken: the jobs the event changed
        self.failures: list[str] = []
        self.handled = False
        self.done = False
        self._callbacks: list[Callable[[Block], None]] = []

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def hold(self) -> Callable[[str | None], None]:
        """Register one more job to wait for; returns the release function it calls once,
        with the failure description, or None when it got where it was sent."""
        self.holders += 1
        self.held += 1
        released = False

        def release(failure: str | None) -> None:
            nonlocal released
            if released:
                return
            released = True
            if failure:
                self.failures.append(failure)
            self.holders -= 1
            self._maybe_finish()

        return release

    def on_finished(self, callback: Callable[[Block], None]) -> None:
        if self.done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def _maybe_finish(self) -> None:
        if self.handled and self.holders == 0 and not self.done:
            self.done = True
            callbacks, self._callbacks = self._callbacks, []
            for cb in callbacks:
                cb(self)


class EventQueue:
    """FIFO of events; ``handler(event, block)`` applies one event to the jobs."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        handler: Callable[[Event, Block], None],
        on_error: Callable[[Event, Exception], None] | None = None,
    ) -> None:
        self._loop = loop
        self._handler = handler
        self._on_error = on_error or _log_error
        self._pending: deque[Block] = deque()
        self._scheduled = False
        self._running = False  # inside a handler
        self._held: dict[Hashable, list[Release]] = {}

    def hold(self, block: Block, holder: Hashable) -> Release:
        """``holder`` (a job) holds ``block`` until it calls the returned release function
        (with a failure description, or None) or :meth:`release_held` lets go for it."""
        inner = block.hold()
        held = self._held.setdefault(holder, [])

        def release(failure: str | None) -> None:
            if release in held:
                held.remove(release)
                if not held and self._held.get(holder) is held:
                    del self._held[holder]
            inner(failure)

        held.append(release)
        return release

    def release_held(self, holder: Hashable) -> None:
        """Let go, as successes, of every block ``holder`` still holds (its goal changes)."""
        for release in list(self._held.pop(holder, [])):
            release(None)

    def holding(self, holder: Hashable) -> int:
        """How many blocks ``holder`` holds now."""
        return len(self._held.get(holder, ()))

    def idle(self) -> bool:
        """Whether no event is queued and none is being handled now: an event emitted now
        would be the next one handled, with nothing before it."""
        return not self._pending and not self._running

    def emit(self, event: Event, on_finished: Callable[[Block], None] | None = None) -> Block:
        """Queue ``event``; it is handled on a later loop turn."""
        block = Block(event)
        if on_finished is not None:
            block.on_finished(on_finished)
        self._pending.append(block)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)
        return block

    def _run(self) -> None:
        """Handle queued events in order, for at most :data:`SLICE` seconds; what is left is
        handled on the next loop turn, so a burst (one event starting a thousand jobs) never
        keeps bus callers waiting for long."""
        self._scheduled = False
        deadline = time.monotonic() + SLICE
        while self._pending:
            block = self._pending.popleft()
            self._running = True
            try:
                self._handler(block.event, block)
            except Exception as err:
                self._on_error(block.event, err)
            finally:
                self._running = False
                block.handled = True
                block._maybe_finish()
            if self._pending and time.monotonic() > deadline:
                self._scheduled = True
                self._loop.call_soon(self._run)
                return

    def __len__(self) -> int:
        return len(self._pending)
