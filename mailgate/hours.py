"""Business-hours arithmetic: pure functions of a schedule and instants (vocabulary: imports nothing
of mailgate's but the holiday calendar; config, rules and the SLA code build on it).

All comparisons and subtractions happen in UTC: Python subtracts two aware
datetimes that share a zoneinfo as wall-clock times, which is wrong across a
DST change. Local time is used only to find each day's opening hours.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailgate.holiday_calendar import Calendar, CalendarError, calendar

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
MAX_DAYS = 3 * 366  # a schedule open less than once in three years is a configuration error
CONFIGURED = "configured date"  # what a holiday listed by date is called where calendar ones show their name
_NO_DAYS: Mapping[date, str] = {}


class ScheduleError(ValueError):
    """A bad schedule; ``at`` is the path inside the schedule's mapping, so the message can name its line."""

    def __init__(self, message: str, at: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.at = at


@dataclass(frozen=True)
class Schedule:
    """Weekly opening hours in a timezone, minus holidays (listed dates and a country's calendar).
    ``hours=None`` means 24x7."""

    tz: ZoneInfo
    hours: tuple[tuple[tuple[time, time], ...], ...] | None  # index 0 = Monday
    holidays: frozenset[date] = frozenset()
    calendar: Calendar | None = None

    @property
    def always(self) -> bool:
        return self.hours is None

    def holiday(self, day: date) -> str | None:
        """The holiday's name, ``CONFIGURED`` for a listed date the calendar does not name, or None."""
        name = self.calendar.year(day.year).get(day) if self.calendar is not None else None
        return name or (CONFIGURED if day in self.holidays else None)


ALWAYS = Schedule(ZoneInfo("UTC"), None)


def _days(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"unknown day {part!r} (use mon..sun, ranges like mon-fri)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        out.extend(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return out


def _spans(spec: str) -> list[tuple[time, time]]:
    spans = []
    for part in spec.split(","):
        m = _SPAN.match(part)
        if not m:
            raise ValueError(f"bad opening hours {part!r} (use HH:MM-HH:MM)")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        start = time(h1, m1)
        end = time(23, 59, 59, 999999) if (h2, m2) == (24, 0) else time(h2, m2)
        if end <= start:
            raise ValueError(f"opening hours {part!r} end before they start")
        spans.append((start, end))
    return sorted(spans)


def parse_schedule(spec: dict[str, Any]) -> Schedule:
    """``{timezone, hours: {"mon-fri": "09:00-17:00"}, holidays: [2026-12-25]}`` -> Schedule."""
    try:
        tz = ZoneInfo(str(spec.get("timezone", "UTC")))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {spec.get('timezone')!r}") from None
    week: list[list[tuple[time, time]]] = [[] for _ in DAYS]
    for days, spans in (spec.get("hours") or {}).items():
        for day in _days(str(days)):
            week[day].extend(_spans(str(spans)))
    if not any(week):
        raise ValueError("schedule has no opening hours")
    holidays, cal = _holidays(spec.get("holidays"))
    return Schedule(tz, tuple(tuple(sorted(d)) for d in week), holidays, cal)


def _holidays(spec: Any) -> tuple[frozenset[date], Calendar | None]:
    """``[2026-12-25]``, or ``{country, subdivision, categories, language, dates: [2026-12-24]}``."""
    if spec is None:
        return frozenset(), None
    if isinstance(spec, list):
        return _dates(spec, ("holidays",)), None
    if not isinstance(spec, dict):
        raise ScheduleError("holidays must be a list of dates or {country: DE, subdivision: BY, dates: [...]}")
    keys = ("country", "subdivision", "categories", "language", "dates")
    for key in spec:
        if key not in keys:
            raise ScheduleError(f"unknown key '{key}' in holidays (use {', '.join(keys)})", ("holidays", key))
    dates = spec.get("dates") or []
    if not isinstance(dates, list):
        raise ScheduleError("holidays' dates must be a list of dates, e.g. [2026-12-24]", ("holidays", "dates"))
    if "country" not in spec and not any(k in spec for k in keys[1:4]):
        return _dates(dates, ("holidays", "dates")), None
    try:
        cal = calendar(spec.get("country"), spec.get("subdivision"), spec.get("categories"), spec.get("language"))
    except CalendarError as exc:
        at = ("holidays", exc.key) if exc.key in spec else ("holidays",)
        raise ScheduleError(str(exc), at) from None
    return _dates(dates, ("holidays", "dates")), cal


def _dates(values: list[Any], at: tuple[str, ...]) -> frozenset[date]:
    out = set()
    for i, value in enumerate(values):
        try:
            out.add(value if isinstance(value, date) else date.fromisoformat(str(value)))
        except ValueError:
            raise ScheduleError(f"bad holiday date {value!r} (use YYYY-MM-DD)", (*at, i)) from None
    return frozenset(out)


def _open_spans(schedule: Schedule, start: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Opening spans as UTC instants, from the local day of ``start`` onwards."""
    assert schedule.hours is not None
    day = start.astimezone(schedule.tz).date()
    cal, year, named = schedule.calendar, 0, _NO_DAYS
    for _ in range(MAX_DAYS):
        if cal is not None and day.year != year:  # once per year the walk enters: a cached lookup
            year, named = day.year, cal.year(day.year)
        if day not in schedule.holidays and day not in named:
            for open_at, close_at in schedule.hours[day.weekday()]:
                a = datetime.combine(day, open_at, schedule.tz).astimezone(UTC)
                b = datetime.combine(day, close_at, schedule.tz).astimezone(UTC)
                if b > a:
                    yield a, b
        day += timedelta(days=1)


def add_business_time(schedule: Schedule, start: datetime, duration: timedelta) -> datetime:
    """The instant when ``duration`` of open time has passed since ``start``."""
    start = start.astimezone(UTC)
    if schedule.always:
        return start + duration
    left = duration
    for a, b in _open_spans(schedule, start):
        if b <= start:
            continue
        a = max(a, start)
        if b - a >= left:
            return a + left
        left -= b - a
    raise ValueError("schedule never opens long enough")


def business_time_between(schedule: Schedule, start: datetime, end: datetime) -> timedelta:
    """Open time in [start, end); zero when end is not after start."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        return timedelta(0)
    if schedule.always:
        return end - start
    total = timedelta(0)
    for a, b in _open_spans(schedule, start):
        if a >= end:
            break
        a, b = max(a, start), min(b, end)
        if b > a:
            total += b - a
    return total


def holidays_between(schedule: Schedule, start: datetime, end: datetime) -> list[tuple[date, str]]:
    """The holidays that pushed ``end`` later: closed days whose weekly hours would have been open
    somewhere in [start, end). A holiday on a day the schedule never opens moved nothing."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if schedule.always or end <= start:
        return []
    assert schedule.hours is not None
    out = []
    day, last = start.astimezone(schedule.tz).date(), end.astimezone(schedule.tz).date()
    while day <= last:
        name = schedule.holiday(day)
        if name is not None:
            for open_at, close_at in schedule.hours[day.weekday()]:
                a = datetime.combine(day, open_at, schedule.tz).astimezone(UTC)
                b = datetime.combine(day, close_at, schedule.tz).astimezone(UTC)
                if max(a, start) < min(b, end):
                    out.append((day, name))
                    break
        day += timedelta(days=1)
    return out


def is_open(schedule: Schedule, at: datetime) -> bool:
    if schedule.always:
        return True
    at = at.astimezone(UTC)
    return any(a <= at < b for a, b in _first_spans(schedule, at))


def _first_spans(schedule: Schedule, at: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Spans of the local day before and of the day of ``at`` (a span may cross midnight UTC)."""
    for a, b in _open_spans(schedule, at - timedelta(days=1)):
        if a > at:
            return
        yield a, b
