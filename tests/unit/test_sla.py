"""Business-hours arithmetic: weekends, holidays, DST changes, timezones, and its inverse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailgate.hours import ALWAYS, add_business_time, business_time_between, is_open, parse_schedule

BERLIN = ZoneInfo("Europe/Berlin")
BUSINESS = parse_schedule({"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"},
                           "holidays": ["2026-12-25"]})


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def test_within_one_day() -> None:
    assert add_business_time(BUSINESS, berlin(2026, 11, 24, 10, 0), timedelta(hours=2)) == berlin(2026, 11, 24, 12, 0)


def test_rolls_over_the_night_and_weekend() -> None:
    # Friday 16:00 + 2h of business time = Monday 10:00
    due = add_business_time(BUSINESS, berlin(2026, 11, 27, 16, 0), timedelta(hours=2))
    assert due == berlin(2026, 11, 30, 10, 0)


def test_start_outside_hours_starts_at_opening() -> None:
    due = add_business_time(BUSINESS, berlin(2026, 11, 28, 3, 0), timedelta(minutes=30))  # Saturday night
    assert due == berlin(2026, 11, 30, 9, 30)


def test_holiday_is_skipped() -> None:
    # Thursday 24 Dec 16:00 + 2h: Friday 25 Dec is a holiday, so Monday 28 Dec 10:00
    due = add_business_time(BUSINESS, berlin(2026, 12, 24, 16, 0), timedelta(hours=2))
    assert due == berlin(2026, 12, 28, 10, 0)


def test_dst_change_keeps_local_opening_hours() -> None:
    # Europe/Berlin leaves DST on Sunday 25 Oct 2026: opening is still 09:00 local, i.e. 08:00 UTC not 07:00
    due = add_business_time(BUSINESS, berlin(2026, 10, 23, 16, 0), timedelta(hours=2))
    assert due == berlin(2026, 10, 26, 10, 0)
    assert due.astimezone(UTC) == datetime(2026, 10, 26, 9, 0, tzinfo=UTC)


def test_24x7_across_dst_is_elapsed_time() -> None:
    start = berlin(2026, 10, 25, 1, 0)
    assert add_business_time(ALWAYS, start, timedelta(hours=3)) == start.astimezone(UTC) + timedelta(hours=3)


def test_other_timezone() -> None:
    ny = parse_schedule({"timezone": "America/New_York", "hours": {"mon-fri": "09:00-17:00"}})
    start = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)  # 16:00 in New York
    assert add_business_time(ny, start, timedelta(hours=2)) == datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def test_split_hours_and_weekend_wraparound() -> None:
    shop = parse_schedule({"timezone": "UTC", "hours": {"sat-mon": "10:00-12:00,13:00-15:00"}})
    start = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)  # Saturday
    assert add_business_time(shop, start, timedelta(hours=2)) == datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
    assert add_business_time(shop, start, timedelta(hours=4)) == datetime(2026, 11, 29, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize("hours", [1, 5, 8, 9, 17, 40, 100])
def test_between_is_the_inverse_of_add(hours: int) -> None:
    start = berlin(2026, 12, 23, 11, 17)
    due = add_business_time(BUSINESS, start, timedelta(hours=hours))
    assert business_time_between(BUSINESS, start, due) == timedelta(hours=hours)


def test_is_open() -> None:
    assert is_open(BUSINESS, berlin(2026, 11, 24, 9, 0))
    assert not is_open(BUSINESS, berlin(2026, 11, 24, 17, 0))
    assert not is_open(BUSINESS, berlin(2026, 11, 28, 12, 0))  # Saturday
    assert not is_open(BUSINESS, berlin(2026, 12, 25, 12, 0))  # holiday


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"timezone": "Mars/Olympus", "hours": {"mon": "09:00-17:00"}}, "unknown timezone"),
        ({"hours": {"funday": "09:00-17:00"}}, "unknown day"),
        ({"hours": {"mon": "9-5"}}, "bad opening hours"),
        ({"hours": {"mon": "17:00-09:00"}}, "end before they start"),
        ({"hours": {}}, "no opening hours"),
    ],
)
def test_bad_schedules_are_refused(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(spec)
