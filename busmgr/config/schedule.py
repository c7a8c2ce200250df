"""Timer syntax: durations (``EVERY=30s``) and calendar expressions (``ON="Mon..Fri 09:00"``).

Durations are a number of seconds, or numbers each followed by a unit, added up (``90``,
``1.5s``, ``250ms``, ``1h 30min``, ``2d12h``). Units: ``ms``/``msec``, ``s``/``sec``/
``second(s)``, ``m``/``min``/``minute(s)``, ``h``/``hr``/``hour(s)``, ``d``/``day(s)``,
``w``/``week(s)``. A duration lies between :data:`MIN_INTERVAL` and :data:`MAX_INTERVAL`.

Calendar expressions are a subset of systemd's (``systemd.time(7)``)::

    [WEEKDAYS] [[YEAR-]MONTH-DAY] [HOUR:MINUTE[:SECOND]] [UTC]

WEEKDAYS is a list of days or ranges (``Mon``, ``Mon..Fri``, ``Sat,Sun``; English names, full
or three letters, any case). Each number field is ``*`` (any) or a list of values, ranges
(``9..17``) and repetitions (``0/15``: from 0 every 15; ``*/15``; ``9..17/2``). What is left
out is ``*`` for the date and ``00:00:00`` for the time (``Mon`` is Monday at midnight; a
missing SECOND is 0). The words ``minutely``, ``hourly``, ``daily``, ``weekly``, ``monthly``,
``quarterly``, ``semiannually``, ``yearly`` and ``annually`` stand for the usual expressions.
Times are local (daylight saving time included) unless the expression ends in ``UTC``.

Invariants: pure (no clock is read here; :meth:`Calendar.next_after` is given the time); every
malformed input raises :class:`ScheduleError` with a message naming the bad part, never another
exception; :meth:`Calendar.next_after` always terminates (the search stops at
:data:`MAX_YEAR`) and returns a time strictly after the one it is given, or None when the
expression is never due again.
"""

from __future__ import annotations

import calendar as _calendar
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "MAX_INTERVAL",
    "MIN_INTERVAL",
    "Calendar",
    "ScheduleError",
    "parse_calendar",
    "parse_duration",
]

#: The shortest ``EVERY`` (a shorter one would flood the event queue).
MIN_INTERVAL = 0.01
#: The longest ``EVERY``: ten years.
MAX_INTERVAL = 10 * 366 * 86400.0
MIN_YEAR, MAX_YEAR = 1970, 2199


class ScheduleError(ValueError):
    """A duration or calendar expression that does not parse; the message says why."""


# -- durations -------------------------------------------------------------------------------

_UNITS: dict[str, float] = {
    "ms": 0.001,
    "msec": 0.001,
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
    "weeks": 604800.0,
}
_PART = re.compile(r"\s*([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*([A-Za-z]*)")


def parse_duration(text: str) -> float:
    """Seconds for ``text`` (see the module docstring); raises :class:`ScheduleError`."""
    pos, total, parts = 0, 0.0, 0
    stripped = text.strip()
    while pos < len(stripped):
        found = _PART.match(stripped, pos)
        if found is None:
            raise ScheduleError(f'bad duration "{text}": expected a number at "{stripped[pos:]}"')
        number, unit = found.groups()
        scale = _UNITS.get(unit.lower())
        if scale is None:
            raise ScheduleError(
                f'bad duration "{text}": unknown unit "{unit}" (use ms, s, min, h, d or w)'
            )
        if unit == "" and parts == 0 and found.end() < len(stripped):
            raise ScheduleError(f'bad duration "{text}": a number without a unit must be alone')
        total += float(number) * scale
        parts += 1
        pos = found.end()
    if parts == 0:
        raise ScheduleError("empty duration")
    if total < MIN_INTERVAL:
        raise ScheduleError(f'duration "{text}" is too short (at least {MIN_INTERVAL * 1000:g}ms)')
    if total > MAX_INTERVAL:
        raise ScheduleError(f'duration "{text}" is too long (at most ten years)')
    return total


# -- calendar expressions --------------------------------------------------------------------

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES = {name: i for i, name in enumerate(_WEEKDAYS)} | {
    full: i
    for i, full in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    )
}
_SHORTHANDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
}
_NUMBER = re.compile(r"[0-9]{1,4}\Z")


def _number(text: str, what: str, low: int, high: int) -> int:
    if not _NUMBER.match(text):
        raise ScheduleError(f'bad {what} "{text}": not a number')
    value = int(text)
    if not low <= value <= high:
        raise ScheduleError(f"bad {what} {value}: must be from {low} to {high}")
    return value


def _field(text: str, what: str, low: int, high: int) -> frozenset[int] | None:
    """A number field: None for ``*``, else the set of values it allows."""
    if text == "*":
        return None
    if not text:
        raise ScheduleError(f"empty {what}")
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = _number(step_text, f"{what} repetition", 1, high - low + 1) if slash else 1
        if base == "*":
            first, last = low, high
        elif ".." in base:
            start, _, end = base.partition("..")
            first = _number(start, what, low, high)
            last = _number(end, what, low, high)
            if last < first:
                raise ScheduleError(f'bad {what} range "{base}": it ends before it starts')
        else:
            first = _number(base, what, low, high)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _weekdays(text: str) -> frozenset[int]:
    days: set[int] = set()
    for item in text.split(","):
        start, dots, end = item.partition("..")
        names = (start, end) if dots else (start, start)
        try:
            first, last = (_WEEKDAY_NAMES[n.lower()] for n in names)
        except KeyError:
            raise ScheduleError(f'bad weekday "{item}" (use Mon, Tue, ... Sun)') from None
        if last < first:
            raise ScheduleError(f'bad weekday range "{item}": it ends before it starts')
        days.update(range(first, last + 1))
    return frozenset(days)


@dataclass(frozen=True, slots=True)
class Calendar:
    """A parsed calendar expression: the values each field allows (None: any).

    ``weekdays`` counts from Monday (0) to Sunday (6), as :meth:`datetime.weekday` does.
    """

    text: str
    years: frozenset[int] | None = None
    months: frozenset[int] | None = None
    days: frozenset[int] | None = None
    weekdays: frozenset[int] | None = None
    hours: frozenset[int] | None = frozenset({0})
    minutes: frozenset[int] | None = frozenset({0})
    seconds: frozenset[int] | None = frozenset({0})
    utc: bool = False

    def next_after(self, after: float) -> float | None:
        """The first due time strictly after ``after`` (seconds since the epoch), or None if
        the expression is never due again (before :data:`MAX_YEAR`).

        Local times that do not exist (skipped by a daylight saving change) are due when the
        clock reaches them after the change, as ``mktime`` normalises them; a local time that
        happens twice is due once, the first time.
        """
        if not math.isfinite(after):
            return None
        start = math.floor(after) + 1
        to_epoch: Callable[[datetime], float]
        if self.utc:
            moment = datetime(*time.gmtime(start)[:6])
            to_epoch = _utc_epoch
        else:
            moment = datetime(*time.localtime(start)[:6])
            to_epoch = _local_epoch
        while True:
            found = self._next_naive(moment)
            if found is None:
                return None
            epoch = to_epoch(found)
            if epoch > after:
                return epoch
            moment = found + timedelta(seconds=1)

    def _next_naive(self, moment: datetime) -> datetime | None:
        """The first wall-clock moment at or after ``moment`` that every field allows.

        Each step moves ``moment`` forward to the next candidate of the first field that does
        not allow it and checks every field again, so the loop ends (by :data:`MAX_YEAR`).
        """
        while moment.year <= MAX_YEAR:
            if not _allows(self.years, moment.year):
                year = _following(self.years, moment.year)
                if year is None:
                    return None
                moment = datetime(year, 1, 1)
            elif not _allows(self.months, moment.month):
                month = _following(self.months, moment.month)
                moment = (
                    datetime(moment.year + 1, 1, 1)
                    if month is None
                    else datetime(moment.year, month, 1)
                )
            elif not (_allows(self.days, moment.day) and _allows(self.weekdays, moment.weekday())):
                moment = _next_day(moment)
            elif not _allows(self.hours, moment.hour):
                hour = _following(self.hours, moment.hour)
                moment = (
                    _next_day(moment)
                    if hour is None
                    else moment.replace(hour=hour, minute=0, second=0)
                )
            elif not _allows(self.minutes, moment.minute):
                minute = _following(self.minutes, moment.minute)
                moment = (
                    moment.replace(minute=0, second=0) + timedelta(hours=1)
                    if minute is None
                    else moment.replace(minute=minute, second=0)
                )
            elif not _allows(self.seconds, moment.second):
                second = _following(self.seconds, moment.second)
                moment = (
                    moment.replace(second=0) + timedelta(minutes=1)
                    if second is None
                    else moment.replace(second=second)
                )
            else:
                return moment
        return None


def _allows(values: frozenset[int] | None, value: int) -> bool:
    return values is None or value in values


def _following(values: frozenset[int] | None, value: int) -> int | None:
    """The smallest allowed value above ``value`` (None if there is none; only called when
    ``values`` does not allow ``value``, so never with None)."""
    if values is None:
        return value + 1
    above = [v for v in values if v > value]
    return min(above) if above else None


def _next_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0) + timedelta(days=1)


def _local_epoch(moment: datetime) -> float:
    return time.mktime((*moment.timetuple()[:8], -1))


def _utc_epoch(moment: datetime) -> float:
    return float(_calendar.timegm(moment.timetuple()))


_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_calendar(text: str) -> Calendar:
    """The :class:`Calendar` ``text`` describes; raises :class:`ScheduleError`."""
    words = text.split()
    if not words:
        raise ScheduleError("empty calendar expression")
    if len(words) == 1 and words[0].lower() in _SHORTHANDS:
        parsed = parse_calendar(_SHORTHANDS[words[0].lower()])
        return Calendar(
            text,
            parsed.years,
            parsed.months,
            parsed.days,
            parsed.weekdays,
            parsed.hours,
            parsed.minutes,
            parsed.seconds,
        )
    utc = words[-1].upper() == "UTC"
    if utc:
        words = words[:-1]
    weekdays: frozenset[int] | None = None
    first = words[0] if words else ""
    if ":" not in first and "-" not in first and any(c.isalpha() for c in first):
        weekdays = _weekdays(words.pop(0))
    date_word = words.pop(0) if words and "-" in words[0] else None
    time_word = words.pop(0) if words and ":" in words[0] else None
    if words:
        raise ScheduleError(
            f'bad calendar expression "{text}": unexpected "{" ".join(words)}" '
            "(expected [WEEKDAYS] [YEAR-MONTH-DAY] [HOUR:MINUTE[:SECOND]] [UTC])"
        )
    if weekdays is None and date_word is None and time_word is None:
        raise ScheduleError(f'bad calendar expression "{text}": nothing to schedule')
    years = months = days = None
    if date_word is not None:
        parts = date_word.split("-")
        if len(parts) == 2:
            parts = ["*", *parts]
        if len(parts) != 3:
            raise ScheduleError(f'bad date "{date_word}": expected YEAR-MONTH-DAY or MONTH-DAY')
        years = _field(parts[0], "year", MIN_YEAR, MAX_YEAR)
        months = _field(parts[1], "month", 1, 12)
        days = _field(parts[2], "day", 1, 31)
    hours: frozenset[int] | None = frozenset({0})
    minutes: frozenset[int] | None = frozenset({0})
    seconds: frozenset[int] | None = frozenset({0})
    if time_word is not None:
        parts = time_word.split(":")
        if len(parts) not in (2, 3):
            raise ScheduleError(f'bad time "{time_word}": expected HOUR:MINUTE[:SECOND]')
        hours = _field(parts[0], "hour", 0, 23)
        minutes = _field(parts[1], "minute", 0, 59)
        seconds = _field(parts[2], "second", 0, 59) if len(parts) == 3 else frozenset({0})
    possible_months = range(1, 13) if months is None else months
    possible_days = range(1, 32) if days is None else days
    if not any(d <= _MONTH_DAYS[m - 1] for m in possible_months for d in possible_days):
        raise ScheduleError(f'calendar expression "{text}" names a day that never exists')
    return Calendar(text, years, months, days, weekdays, hours, minutes, seconds, utc)
