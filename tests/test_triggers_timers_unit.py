"""Timers without a manager: calendar arithmetic (time zones, daylight saving time) and the
timer bridge against a fake clock, which shows that it wakes exactly once per due time."""

from __future__ import annotations

import calendar as cal
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from busmgr.config import parse_event_expr
from busmgr.config.schedule import parse_calendar
from busmgr.events import Event
from busmgr.jobclass import JobClass
from busmgr.triggers.timers import TimerBridge, timer_specs


@pytest.fixture
def berlin() -> Iterator[None]:
    """Local time is Europe/Berlin (daylight saving time from the last Sunday of March to the
    last Sunday of October) for the test."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> float:
    return time.mktime((y, mo, d, h, mi, s, 0, 0, -1))


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> float:
    return float(cal.timegm((y, mo, d, h, mi, s, 0, 0, 0)))


def show(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))


def test_weekdays_at_nine(berlin: None) -> None:
    c = parse_calendar("Mon..Fri 09:00")
    friday_evening = local(2026, 11, 27, 18)  # a Friday
    assert show(c.next_after(friday_evening)) == "2026-11-30 09:00:00 CET"  # Monday
    monday_nine = local(2026, 11, 30, 9)
    assert show(c.next_after(monday_nine)) == "2026-12-01 09:00:00 CET"  # strictly after
    assert show(c.next_after(monday_nine - 0.5)) == "2026-11-30 09:00:00 CET"


def test_repetitions_and_dates(berlin: None) -> None:
    start = local(2026, 11, 29, 20, 7, 3)
    assert show(parse_calendar("*:0/15").next_after(start)) == "2026-11-29 20:15:00 CET"
    assert show(parse_calendar("*:*:0/10").next_after(start)) == "2026-11-29 20:07:10 CET"
    assert show(parse_calendar("hourly").next_after(start)) == "2026-11-29 21:00:00 CET"
    assert show(parse_calendar("monthly").next_after(start)) == "2026-12-01 00:00:00 CET"
    assert show(parse_calendar("*-02-29 12:00").next_after(start)) == "2028-02-29 12:00:00 CET"
    assert show(parse_calendar("23:59:59").next_after(start)) == "2026-11-29 23:59:59 CET"
    assert show(parse_calendar("Sun 00:00").next_after(start)) == "2026-12-06 00:00:00 CET"
    assert parse_calendar("2020-01-01").next_after(start) is None
    assert parse_calendar("Mon 2026-12-01").next_after(start) is None  # a Tuesday
    assert parse_calendar("2199-12-31 23:59:59").next_after(local(2199, 12, 31, 23, 59, 59)) is None


def test_utc_expressions_ignore_the_local_zone(berlin: None) -> None:
    c = parse_calendar("09:00 UTC")
    assert c.next_after(utc(2026, 7, 1, 8, 59)) == utc(2026, 7, 1, 9)
    assert c.next_after(utc(2026, 7, 1, 9)) == utc(2026, 7, 2, 9)


def test_spring_forward_skipped_time_is_due_after_the_change(berlin: None) -> None:
    # 2026-03-29 02:00 CET the clocks go to 03:00 CEST: 02:30 does not exist that day.
    c = parse_calendar("02:30")
    due = c.next_after(local(2026, 3, 28, 12))
    assert show(due) == "2026-03-29 03:30:00 CEST"
    assert due == utc(2026, 3, 29, 1, 30)
    assert show(c.next_after(due)) == "2026-03-30 02:30:00 CEST"


def test_fall_back_repeated_time_is_due_once(berlin: None) -> None:
    # 2026-10-25 03:00 CEST the clocks go back to 02:00 CET: 02:30 happens twice.
    c = parse_calendar("02:30")
    first = c.next_after(local(2026, 10, 25, 0))
    assert first is not None
    assert time.localtime(first)[:5] == (2026, 10, 25, 2, 30)
    second = c.next_after(first)
    assert show(second) == "2026-10-26 02:30:00 CET"


# -- the bridge against a fake clock ---------------------------------------------------------


@dataclass
class FakeAlarm:
    callback: Callable[..., None]
    when: float | None = None
    sets: list[float] = field(default_factory=list)

    def set(self, when: float) -> None:
        self.when = when
        self.sets.append(when)

    def clear(self) -> None:
        self.when = None

    def close(self) -> None:
        self.when = None


class FakeClock:
    """Two clocks that only move when the test says so; an alarm fires exactly at its time."""

    def __init__(self, mono: float = 100.0, wall: float = 1_000_000.0) -> None:
        self.mono = mono
        self.wall_now = wall
        self.mono_alarm: FakeAlarm | None = None
        self.wall_alarm_: FakeAlarm | None = None

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.wall_now

    def monotonic_alarm(self, callback: Callable[[], None]) -> FakeAlarm:
        self.mono_alarm = FakeAlarm(callback)
        return self.mono_alarm

    def wall_alarm(self, callback: Callable[[bool], None]) -> FakeAlarm:
        self.wall_alarm_ = FakeAlarm(callback)
        return self.wall_alarm_

    def run_mono(self, until: float, late: float = 0.0) -> None:
        """Let monotonic time pass to ``until``, each wake-up ``late`` seconds late."""
        alarm = self.mono_alarm
        assert alarm is not None
        while alarm.when is not None and alarm.when + late <= until:
            self.mono = alarm.when + late
            alarm.when = None
            alarm.callback()
        self.mono = until

    def run_wall(self, until: float) -> None:
        alarm = self.wall_alarm_
        assert alarm is not None
        while alarm.when is not None and alarm.when <= until:
            self.wall_now = alarm.when
            alarm.when = None
            alarm.callback(False)
        self.wall_now = until


def job(name: str, start_on: str = "", stop_on: str = "", manual: bool = False) -> JobClass:
    return JobClass(
        name=name,
        manual=manual,
        start_on=parse_event_expr(start_on) if start_on else None,
        stop_on=parse_event_expr(stop_on) if stop_on else None,
    )


class Recorder:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.events: list[tuple[float, float, str]] = []

    def __call__(self, event: Event) -> None:
        self.events.append((self.clock.mono, self.clock.wall_now, str(event)))


def bridge_with(*jobs: JobClass, clock: FakeClock) -> tuple[TimerBridge, Recorder]:
    emitted = Recorder(clock)
    bridge = TimerBridge(emitted, clock)
    bridge.update(jobs)
    return bridge, emitted


def test_every_is_due_one_interval_after_start_and_never_drifts() -> None:
    clock = FakeClock(mono=100.0)
    bridge, emitted = bridge_with(job("a", "timer EVERY=30s"), clock=clock)
    assert bridge.anchor == 100.0
    assert bridge.mono_at == 130.0
    clock.run_mono(250.0)
    assert [(t, e) for t, _, e in emitted.events] == [
        (130.0, "timer EVERY=30s"),
        (160.0, "timer EVERY=30s"),
        (190.0, "timer EVERY=30s"),
        (220.0, "timer EVERY=30s"),
        (250.0, "timer EVERY=30s"),
    ]
    assert clock.mono_alarm is not None
    # exactly one alarm per due time, each for that due time: no wake-up in between
    assert clock.mono_alarm.sets == [130.0, 160.0, 190.0, 220.0, 250.0, 280.0]
    assert bridge.wall_at is None and clock.wall_alarm_ is not None
    assert clock.wall_alarm_.sets == []


def test_late_wake_ups_do_not_shift_the_schedule_or_pile_up() -> None:
    clock = FakeClock(mono=0.0)
    _bridge, emitted = bridge_with(job("a", "timer EVERY=10s"), clock=clock)
    clock.run_mono(35.0, late=3.0)  # every wake-up 3 s late
    assert [t for t, _, _ in emitted.events] == [13.0, 23.0, 33.0]
    assert clock.mono_alarm is not None and clock.mono_alarm.when == 40.0
    # asleep through three due times: one event, and the next due time stays on the grid
    clock.mono = 75.0
    clock.mono_alarm.when = None
    clock.mono_alarm.callback()
    assert len(emitted.events) == 4
    assert clock.mono_alarm.when == 80.0


def test_schedules_share_wake_ups_and_are_shared_by_jobs() -> None:
    clock = FakeClock(mono=0.0)
    bridge, emitted = bridge_with(
        job("a", "timer EVERY=30s"),
        job("b", "timer EVERY=30s or startup"),
        job("c", stop_on="timer EVERY=45s"),
        job("d", "timer EVERY=1s", manual=True),  # manual: its start on is not followed
        clock=clock,
    )
    assert set(bridge.schedules) == {("EVERY", "30s"), ("EVERY", "45s")}
    clock.run_mono(90.0)
    assert [(t, e) for t, _, e in emitted.events] == [
        (30.0, "timer EVERY=30s"),
        (45.0, "timer EVERY=45s"),
        (60.0, "timer EVERY=30s"),
        (90.0, "timer EVERY=30s"),
        (90.0, "timer EVERY=45s"),
    ]
    assert clock.mono_alarm is not None
    assert clock.mono_alarm.sets == [30.0, 45.0, 60.0, 90.0, 120.0]


def test_reload_keeps_phase_adds_and_drops() -> None:
    clock = FakeClock(mono=100.0)
    bridge, emitted = bridge_with(job("a", "timer EVERY=30s"), clock=clock)
    clock.run_mono(140.0)
    # a schedule added later keeps the manager's phase: anchor + k * interval
    bridge.update([job("a", "timer EVERY=30s"), job("b", "timer EVERY=1min")])
    assert bridge.schedules == {("EVERY", "30s"): 160.0, ("EVERY", "1min"): 160.0}
    assert clock.mono_alarm is not None
    sets = len(clock.mono_alarm.sets)
    bridge.update([job("a", "timer EVERY=30s"), job("b", "timer EVERY=1min")])
    assert len(clock.mono_alarm.sets) == sets  # nothing changed: the alarm is not touched
    bridge.update([])
    assert bridge.schedules == {} and clock.mono_alarm.when is None
    clock.run_mono(400.0)
    assert [e for _, _, e in emitted.events] == ["timer EVERY=30s"]


def test_calendar_runs_on_the_wall_clock() -> None:
    wall = utc(2026, 11, 29, 20, 7, 3)
    clock = FakeClock(wall=wall)
    bridge, emitted = bridge_with(job("a", 'timer ON="*:*:0/20 UTC"'), clock=clock)
    assert bridge.mono_at is None
    assert bridge.wall_at == utc(2026, 11, 29, 20, 7, 20)
    clock.run_wall(utc(2026, 11, 29, 20, 8, 0))
    assert [(w, e) for _, w, e in emitted.events] == [
        (utc(2026, 11, 29, 20, 7, 20), "timer ON=*:*:0/20 UTC"),
        (utc(2026, 11, 29, 20, 7, 40), "timer ON=*:*:0/20 UTC"),
        (utc(2026, 11, 29, 20, 8, 0), "timer ON=*:*:0/20 UTC"),
    ]
    assert clock.wall_alarm_ is not None
    assert len(clock.wall_alarm_.sets) == 4  # three due times, and the next one


def test_calendar_recomputed_when_the_clock_is_set() -> None:
    clock = FakeClock(wall=utc(2026, 11, 29, 10, 0, 0))
    bridge, emitted = bridge_with(job("a", 'timer ON="09:00 UTC"'), clock=clock)
    assert bridge.wall_at == utc(2026, 11, 30, 9)
    # someone sets the clock back a day: today's 09:00 is ahead again
    clock.wall_now = utc(2026, 11, 28, 8, 0, 0)
    assert clock.wall_alarm_ is not None
    clock.wall_alarm_.callback(True)
    assert emitted.events == []
    assert bridge.wall_at == utc(2026, 11, 28, 9)


def test_never_due_sets_no_alarm() -> None:
    clock = FakeClock(wall=utc(2026, 11, 29))
    bridge, _ = bridge_with(job("a", 'timer ON="2020-01-01"'), clock=clock)
    assert bridge.schedules == {("ON", "2020-01-01"): None}
    assert bridge.wall_at is None


def test_timer_specs_of_jobs() -> None:
    specs = timer_specs([job("a", "timer EVERY=5s and (timer ON=daily or x)")])
    assert sorted(specs) == [("EVERY", "5s"), ("ON", "daily")]
