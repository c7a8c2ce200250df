"""The event queue: events are handled one at a time, in the order they were emitted, and an
event is *finished* only when every job it started or stopped has got where it was sent.

Model (Upstart 0.5, "Events"): handling an event may change the goal of jobs; each such job
holds the event's :class:`Block` until it reaches the rest state of that goal (running for a
started service, waiting for a task or a stop). When the last holder lets go, the block is
finished: whoever emitted the event is told, with ``failed`` True if any job it affected
failed. A ``starting`` or ``stopping`` job event blocks the job that emitted it this way, which
is how ``start on starting nfs-server`` makes nfs-server wait for portmap.

Invariants: :meth:`EventQueue.emit` never handles an event re-entrantly; handling happens on a
later loop turn, so a job changing state inside a handler cannot recurse into the queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from busmgr.events import Event


class Block:
    """The jobs an event is waiting for. ``finished`` callbacks run once, when none is left."""

    def __init__(self, event: Event) -> None:
        self.event = event
        self.holders = 0
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
        self, loop: asyncio.AbstractEventLoop, handler: Callable[[Event, Block], None]
    ) -> None:
        self._loop = loop
        self._handler = handler
        self._pending: deque[Block] = deque()
        self._scheduled = False

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
        self._scheduled = False
        while self._pending:
            block = self._pending.popleft()
            try:
                self._handler(block.event, block)
            finally:
                block.handled = True
                block._maybe_finish()

    def __len__(self) -> int:
        return len(self._pending)
