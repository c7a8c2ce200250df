"""The desktop session's start-up: its phases, as events (``busmgr session --desktop NAME``).

Model: once the manager has emitted ``startup``, :meth:`DesktopSession.begin` emits

1. ``desktop-start``, carrying ``DISPLAY``, ``WAYLAND_DISPLAY``, ``XDG_CURRENT_DESKTOP`` and
   ``XDG_SESSION_TYPE``, those that are set in the session's environment at that moment;
2. ``desktop-phase PHASE=P`` (the same variables after ``PHASE``) for each phase P of
   :data:`~busmgr.config.desktop.PHASES` in order: Initialization, WindowManager, Panel,
   Desktop, Applications.

Each event is emitted once the one before it has finished (every job it started is running, a
task has run, or it failed: the event queue's block) or ``phase_timeout`` seconds after it was
emitted, whichever comes first: a service that hangs delays the desktop by that much at most,
and the log says which phase went on without it. When a phase begins, the room also schedules
``desktop-delay PHASE=P DELAY=N`` N seconds later, for each N that some job waits for in that
phase (``start on desktop-delay PHASE=P DELAY=N``, which the autostart importer writes for
``X-GNOME-Autostart-Delay``); a delayed start holds no phase back.

Autostart entries are jobs (:mod:`busmgr.config.desktop` makes them, the catalog loads them),
started by these events like any job: this room starts nothing itself and holds no job (the
entries that are not jobs are the catalog's ``skipped``, which ``busmgr list`` shows). The
environment is read at each emission, so what an early phase sets
(``dbus-update-activation-environment DISPLAY=:1`` by a display server) reaches the later
events and the jobs they start.

Invariants: events are emitted in the order above, each at most once per session; nothing is
emitted once the session is ending (``EndSession``) or the manager shuts down; :meth:`close`
cancels whatever is pending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from busmgr.config.desktop import DELAY_EVENT, PHASE_EVENT, PHASES, START_EVENT
from busmgr.control import Control
from busmgr.eventqueue import Block
from busmgr.events import Event
from busmgr.jobclass import JobClass, expr_events
from busmgr.options import DesktopOptions

log = logging.getLogger("busmgr")

__all__ = ["DISPLAY_VARIABLES", "DesktopSession", "phase_delays"]

#: The variables ``desktop-start`` and the phase events carry, when they are set.
DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "XDG_CURRENT_DESKTOP", "XDG_SESSION_TYPE")

#: The longest ``desktop-delay`` scheduled (a day): a longer one is a mistake, not a wish.
MAX_DELAY = 86400.0


def phase_delays(classes: Iterable[JobClass], phase: str) -> dict[str, float]:
    """The delays some job's ``start on`` waits for in ``phase``: ``DELAY`` as written -> seconds.

    Only a ``desktop-delay`` leaf whose ``PHASE`` and ``DELAY`` are literal values counts
    (a glob or a ``$VAR`` names no one time)."""
    delays: dict[str, float] = {}
    for cls in classes:
        for leaf in expr_events(cls.start_on):
            if leaf.name != DELAY_EVENT:
                continue
            args = {a.key: a.pattern for a in leaf.args if a.key is not None and not a.negate}
            text = args.get("DELAY", "")
            if args.get("PHASE") != phase or not text:
                continue
            try:
                seconds = float(text)
            except ValueError:
                continue
            if 0 <= seconds <= MAX_DELAY:
                delays[text] = seconds
    return delays


class DesktopSession:
    """The phases of one desktop session; see the module docstring."""

    def __init__(self, control: Control, options: DesktopOptions) -> None:
        self._control = control
        self.options = options
        self._task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []

    def begin(self) -> asyncio.Task[None]:
        """Start the sequence (once, after ``startup`` was emitted); the task ends after the
        last phase began, or once the session is over."""
        if self._task is None:
            self._task = self._control.loop.create_task(self._run())
        return self._task

    def close(self) -> None:
        """Emit nothing more: cancel the sequence and the delays still pending."""
        if self._task is not None:
            self._task.cancel()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    @property
    def _over(self) -> bool:
        return self._control.shutting_down or self._control.ending

    def _display_env(self) -> list[tuple[str, str]]:
        env = self._control.environment.base()
        return [(key, env[key]) for key in DISPLAY_VARIABLES if env.get(key)]

    async def _run(self) -> None:
        await self._emit(Event.make(START_EVENT, self._display_env()), START_EVENT)
        for phase in PHASES:
            if self._over:
                return
            self._schedule_delays(phase)
            event = Event.make(PHASE_EVENT, [("PHASE", phase), *self._display_env()])
            await self._emit(event, f"phase {phase}")

    async def _emit(self, event: Event, what: str) -> None:
        """Emit ``event``; return when it finished, or after the phase timeout."""
        done: asyncio.Future[Block] = self._control.loop.create_future()
        self._control.queue.emit(event, lambda block: done.done() or done.set_result(block))
        timeout = self.options.phase_timeout
        try:
            block = await asyncio.wait_for(done, timeout)
        except TimeoutError:
            if not self._over:
                log.warning(
                    "desktop: %s: its services are not all ready after %gs; going on", what, timeout
                )
            return
        if block.failures:
            log.warning("desktop: %s: %s", what, "; ".join(block.failures))

    def _schedule_delays(self, phase: str) -> None:
        delays = phase_delays(self._control.registry.classes.values(), phase)
        for text, seconds in sorted(delays.items(), key=lambda item: item[1]):
            timer = self._control.loop.call_later(seconds, self._emit_delay, phase, text)
            self._timers.append(timer)

    def _emit_delay(self, phase: str, delay: str) -> None:
        if self._over:
            return
        env = [("PHASE", phase), ("DELAY", delay), *self._display_env()]
        self._control.queue.emit(Event.make(DELAY_EVENT, env))
