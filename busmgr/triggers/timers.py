"""The timer bridge: ``timer EVERY=...`` and ``timer ON="..."`` become events when due.

Model: every ``timer`` leaf of the jobs' ``start on`` (jobs that are not ``manual``) and
``stop on`` is a schedule, keyed by its operand as written (``EVERY=30s``), so jobs naming the
same one share it. When a schedule is due the bridge emits ``timer EVERY=30s`` (or
``timer ON=Mon..Fri 09:00``), and the ordinary event queue decides what it starts or stops.

* ``EVERY`` schedules run on the monotonic clock (the loop's): due at ``anchor + k *
  interval`` for k = 1, 2, ..., where ``anchor`` is when the manager started; so the first is
  one interval after the start (a schedule added by a reload keeps that phase), and due times
  never drift, however late a wake-up was.
* ``ON`` schedules run on the wall clock (:class:`busmgr.config.schedule.Calendar`), through a
  ``CLOCK_REALTIME`` timerfd, which is on time across a suspend and wakes the bridge when the
  clock is set, to recompute.

Invariants (what "no wake-ups between due times" rests on): at most one alarm per clock is set
at any time, for the earliest due time of that clock's schedules, and it is set again only when
that earliest time changes; nothing polls. A wake-up at or after a due time (within
:data:`EARLY`) emits one event per schedule that is due, whatever number of due times were
missed meanwhile (a late wake-up never floods the queue), then the schedule's next due time is
the first one after now. The clocks and alarms come through :class:`TimerClock`, so the
schedule arithmetic is tested with a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from busmgr.config.triggers import TIMER_EVENT, TimerSpec, TriggerError, timer_leaf
from busmgr.events import Event
from busmgr.jobclass import JobClass, expr_events
from busmgr.triggers.kernel import WallTimer

log = logging.getLogger("busmgr")

__all__ = ["Alarm", "LoopClock", "TimerBridge", "TimerClock", "timer_specs"]

#: A wake-up this close before a due time counts as on time (the loop's and the timerfd's
#: rounding), so no second alarm is set for the rest.
EARLY = 0.001


class Alarm(Protocol):
    """One alarm on one clock: its callback runs once at the time last given to :meth:`set`."""

    def set(self, when: float) -> None: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...


class TimerClock(Protocol):
    """The clocks and alarms the bridge uses (the loop's, or a test's fake)."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    def monotonic_alarm(self, callback: Callable[[], None]) -> Alarm: ...

    def wall_alarm(self, callback: Callable[[bool], None]) -> Alarm:
        """An alarm on the wall clock; its callback gets True when it runs because the clock
        was set (not because the time came)."""
        ...


class _LoopAlarm:
    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None

    def set(self, when: float) -> None:
        self.clear()
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._callback()

    def clear(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        self.clear()


class _WallAlarm:
    """A :class:`~busmgr.triggers.kernel.WallTimer` watched by the loop, made on first use."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[bool], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._timer: WallTimer | None = None

    def set(self, when: float) -> None:
        try:
            if self._timer is None:
                self._timer = WallTimer()
                self._loop.add_reader(self._timer.fd, self._readable)
            self._timer.set(when)
        except OSError as err:
            log.error("timer: cannot set the wall-clock timer: %s", err)

    def _readable(self) -> None:
        if self._timer is None:
            return
        what = self._timer.take()
        if what is not None:
            self._callback(what == "clock-set")

    def clear(self) -> None:
        if self._timer is not None:
            self._timer.clear()

    def close(self) -> None:
        if self._timer is not None:
            self._loop.remove_reader(self._timer.fd)
            self._timer.close()
            self._timer = None


class LoopClock:
    """The real clocks: the loop's monotonic time and timers, ``time.time()`` and a timerfd."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def monotonic(self) -> float:
        return self._loop.time()

    def wall(self) -> float:
        return time.time()

    def monotonic_alarm(self, callback: Callable[[], None]) -> Alarm:
        return _LoopAlarm(self._loop, callback)

    def wall_alarm(self, callback: Callable[[bool], None]) -> Alarm:
        return _WallAlarm(self._loop, callback)


@dataclass
class _Schedule:
    spec: TimerSpec
    due: float | None  # on its clock; None: never again

    @property
    def event(self) -> Event:
        return Event.make(TIMER_EVENT, ((self.spec.key, self.spec.text),))


def timer_specs(classes: Iterable[JobClass]) -> dict[tuple[str, str], TimerSpec]:
    """Every timer the jobs' expressions name, by ``(key, text)``: ``start on`` of jobs that
    are not ``manual``, and ``stop on``."""
    found: dict[tuple[str, str], TimerSpec] = {}
    for cls in classes:
        leaves = expr_events(cls.stop_on)
        if not cls.manual:
            leaves = expr_events(cls.start_on) + leaves
        for leaf in leaves:
            if leaf.name != TIMER_EVENT:
                continue
            try:
                spec = timer_leaf(leaf)
            except TriggerError as err:  # the parser refuses these; a class built elsewhere
                log.warning("%s: %s", cls.source or cls.name, err.message)
                continue
            found.setdefault((spec.key, spec.text), spec)
    return found


class TimerBridge:
    """Keeps one schedule per timer the jobs name and emits their events when due."""

    def __init__(
        self, emit: Callable[[Event], object], clock: TimerClock, anchor: float | None = None
    ) -> None:
        self._emit = emit
        self._clock = clock
        self.anchor = clock.monotonic() if anchor is None else anchor
        self._schedules: dict[tuple[str, str], _Schedule] = {}
        self._mono = clock.monotonic_alarm(self._mono_due)
        self._wall = clock.wall_alarm(self._wall_due)
        # The time each alarm is set for now (None: not set), so it is set again only when
        # the earliest due time changes.
        self.mono_at: float | None = None
        self.wall_at: float | None = None

    @property
    def schedules(self) -> dict[tuple[str, str], float | None]:
        """Each schedule's next due time (on its own clock)."""
        return {key: s.due for key, s in self._schedules.items()}

    def update(self, classes: Iterable[JobClass]) -> None:
        """Follow the timers of ``classes`` (all the manager's current job classes): new ones
        get their first due time, gone ones are dropped, kept ones keep theirs."""
        wanted = timer_specs(classes)
        for key in list(self._schedules):
            if key not in wanted:
                del self._schedules[key]
        for key, spec in wanted.items():
            if key not in self._schedules:
                self._schedules[key] = _Schedule(spec, self._first_due(spec))
        self._arm()

    def close(self) -> None:
        self._mono.close()
        self._wall.close()
        self.mono_at = self.wall_at = None

    # ------------------------------------------------------------------ due times
    def _first_due(self, spec: TimerSpec) -> float | None:
        if spec.calendar is None:
            return self._every_due(spec, self._clock.monotonic())
        return self._calendar_due(spec, self._clock.wall())

    def _every_due(self, spec: TimerSpec, now: float) -> float:
        """The first ``anchor + k * interval`` (k >= 1) after ``now``."""
        k = max(1, math.floor((now - self.anchor) / spec.interval) + 1)
        due = self.anchor + k * spec.interval
        while due <= now + EARLY:
            k += 1
            due = self.anchor + k * spec.interval
        return due

    def _calendar_due(self, spec: TimerSpec, after: float) -> float | None:
        if spec.calendar is None:
            return None
        due = spec.calendar.next_after(after)
        if due is None:
            log.warning("timer ON=%s: never due again", spec.text)
        return due

    # ------------------------------------------------------------------ alarms
    def _arm(self) -> None:
        dues = [(s.spec.calendar is None, s.due) for s in self._schedules.values()]
        mono = [due for monotonic, due in dues if monotonic and due is not None]
        wall = [due for monotonic, due in dues if not monotonic and due is not None]
        mono_at = min(mono) if mono else None
        wall_at = min(wall) if wall else None
        if mono_at != self.mono_at:
            self.mono_at = mono_at
            if mono_at is None:
                self._mono.clear()
            else:
                self._mono.set(mono_at)
        if wall_at != self.wall_at:
            self.wall_at = wall_at
            if wall_at is None:
                self._wall.clear()
            else:
                self._wall.set(wall_at)

    def _mono_due(self) -> None:
        self.mono_at = None
        now = self._clock.monotonic()
        for schedule in list(self._schedules.values()):
            spec = schedule.spec
            if spec.calendar is None and schedule.due is not None and schedule.due <= now + EARLY:
                self._emit(schedule.event)
                schedule.due = self._every_due(spec, now)
        self._arm()

    def _wall_due(self, clock_set: bool) -> None:
        self.wall_at = None
        now = self._clock.wall()
        for schedule in list(self._schedules.values()):
            spec = schedule.spec
            if spec.calendar is None:
                continue
            if clock_set:
                # The clock jumped: every calendar schedule starts again from the new now.
                schedule.due = self._calendar_due(spec, now)
            elif schedule.due is not None and schedule.due <= now + EARLY:
                self._emit(schedule.event)
                schedule.due = self._calendar_due(spec, max(now, schedule.due))
        self._arm()
