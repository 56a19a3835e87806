"""Schedules closed on a country's holidays (the `holidays` package): due times move over them, per
subdivision, across the turn of the year; and what the admin gets wrong is refused with the choices."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailgate.hours import (
    CONFIGURED,
    ScheduleError,
    add_business_time,
    business_time_between,
    holidays_between,
    is_open,
    parse_schedule,
)

BERLIN = ZoneInfo("Europe/Berlin")


def office(**holidays: Any) -> Any:
    return parse_schedule({"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}, "holidays": holidays})


BAVARIA = office(country="DE", subdivision="BY")
BERLIN_STATE = office(country="DE", subdivision="BE")


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def test_a_ticket_opened_the_evening_before_epiphany_is_due_after_it_in_bavaria() -> None:
    # Tuesday 5 January 2027, 16:00 + 2h: one hour that day, Wednesday 6 is Epiphany in Bavaria
    opened = berlin(2027, 1, 5, 16, 0)
    due = add_business_time(BAVARIA, opened, timedelta(hours=2))
    assert due == berlin(2027, 1, 7, 10, 0)
    assert holidays_between(BAVARIA, opened, due) == [(date(2027, 1, 6), "Heilige Drei Könige")]
    assert business_time_between(BAVARIA, opened, due) == timedelta(hours=2)
    assert not is_open(BAVARIA, berlin(2027, 1, 6, 12, 0))


def test_a_holiday_of_one_subdivision_does_not_close_another() -> None:
    opened = berlin(2027, 1, 5, 16, 0)
    due = add_business_time(BERLIN_STATE, opened, timedelta(hours=2))  # Berlin works on Epiphany
    assert due == berlin(2027, 1, 6, 10, 0)
    assert holidays_between(BERLIN_STATE, opened, due) == []
    assert is_open(BERLIN_STATE, berlin(2027, 1, 6, 12, 0))
    # and the other way round: International Women's Day (Monday 8 March 2027) is Berlin's alone
    friday = berlin(2027, 3, 5, 16, 0)
    assert add_business_time(BERLIN_STATE, friday, timedelta(hours=2)) == berlin(2027, 3, 9, 10, 0)
    assert add_business_time(BAVARIA, friday, timedelta(hours=2)) == berlin(2027, 3, 8, 10, 0)


def test_corpus_christi_moves_a_bavarian_due_time_and_not_a_hamburg_one() -> None:
    # Corpus Christi: Thursday 27 May 2027 (Easter + 60 days), a holiday in Bavaria, not in Hamburg
    opened = berlin(2027, 5, 26, 15, 0)
    due = add_business_time(BAVARIA, opened, timedelta(hours=4))
    assert due == berlin(2027, 5, 28, 11, 0)
    assert holidays_between(BAVARIA, opened, due) == [(date(2027, 5, 27), "Fronleichnam")]
    hamburg = office(country="DE", subdivision="HH")
    assert add_business_time(hamburg, opened, timedelta(hours=4)) == berlin(2027, 5, 27, 11, 0)


def test_the_calendar_of_next_year_is_used_across_the_turn_of_the_year() -> None:
    # Wednesday 30 Dec 2026 16:00 + 32h: 1h, Thursday 31 Dec 8h, New Year's Day (Friday) closed, the
    # weekend, Monday 4 and Tuesday 5 Jan 16h, Epiphany closed, Thursday 7 Jan 7h -> 16:00
    opened = berlin(2026, 12, 30, 16, 0)
    due = add_business_time(BAVARIA, opened, timedelta(hours=32))
    assert due == berlin(2027, 1, 7, 16, 0)
    assert holidays_between(BAVARIA, opened, due) == [
        (date(2027, 1, 1), "Neujahr"),
        (date(2027, 1, 6), "Heilige Drei Könige"),
    ]
    assert business_time_between(BAVARIA, opened, due) == timedelta(hours=32)


def test_years_far_from_now_come_from_the_calendar_too() -> None:
    # Easter Monday 2031 is 14 April; a ticket opened the Friday before (Good Friday 11 April is one too)
    opened = berlin(2031, 4, 10, 16, 0)
    due = add_business_time(BAVARIA, opened, timedelta(hours=2))
    assert due == berlin(2031, 4, 15, 10, 0)
    assert [d for d, _ in holidays_between(BAVARIA, opened, due)] == [date(2031, 4, 11), date(2031, 4, 14)]


def test_listed_dates_and_the_calendar_add_up() -> None:
    schedule = office(country="DE", subdivision="BY", dates=["2026-12-24", date(2026, 12, 31)])
    opened = berlin(2026, 12, 23, 16, 0)
    due = add_business_time(schedule, opened, timedelta(hours=2))
    # 23 Dec 1h; 24 (listed), 25 (Christmas), weekend, Monday 28 -> 10:00
    assert due == berlin(2026, 12, 28, 10, 0)
    assert holidays_between(schedule, opened, due) == [
        (date(2026, 12, 24), CONFIGURED),
        (date(2026, 12, 25), "Erster Weihnachtstag"),
    ]
    later = add_business_time(schedule, berlin(2026, 12, 30, 16, 0), timedelta(hours=2))
    assert later == berlin(2027, 1, 4, 10, 0)  # 31 Dec listed, 1 Jan from the calendar


def test_the_plain_list_of_dates_still_works() -> None:
    schedule = parse_schedule({"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"},
                               "holidays": ["2027-01-05"]})
    opened = berlin(2027, 1, 4, 16, 0)
    due = add_business_time(schedule, opened, timedelta(hours=2))
    assert due == berlin(2027, 1, 6, 10, 0)  # 5 Jan listed; Epiphany is no holiday without a calendar
    assert holidays_between(schedule, opened, due) == [(date(2027, 1, 5), CONFIGURED)]


def test_a_holiday_on_a_closed_day_moved_nothing() -> None:
    # Christmas 2027 falls on Saturday and Sunday: nothing to skip, nothing to report
    opened = berlin(2027, 12, 24, 16, 0)
    due = add_business_time(BAVARIA, opened, timedelta(hours=2))
    assert due == berlin(2027, 12, 27, 10, 0)
    assert holidays_between(BAVARIA, opened, due) == []
    # and a holiday after the due time is not one that moved it
    assert holidays_between(BAVARIA, berlin(2027, 1, 5, 9, 0), berlin(2027, 1, 5, 17, 0)) == []


def test_names_in_the_language_asked_for() -> None:
    schedule = office(country="de", subdivision="by", language="en_US", categories=["public"])
    opened = berlin(2027, 1, 5, 16, 0)
    due = add_business_time(schedule, opened, timedelta(hours=2))
    assert holidays_between(schedule, opened, due) == [(date(2027, 1, 6), "Epiphany")]


def test_categories_add_holidays_the_package_keeps_apart() -> None:
    # Assumption Day (15 August) is a holiday only in Bavaria's Catholic communes: category 'catholic'
    opened = berlin(2029, 8, 14, 16, 0)  # Tuesday; 15 August 2029 is a Wednesday
    public = add_business_time(BAVARIA, opened, timedelta(hours=2))
    catholic = add_business_time(office(country="DE", subdivision="BY", categories=["public", "catholic"]),
                                 opened, timedelta(hours=2))
    assert (public, catholic) == (berlin(2029, 8, 15, 10, 0), berlin(2029, 8, 16, 10, 0))


def test_24x7_ignores_holidays() -> None:
    schedule = parse_schedule({"timezone": "UTC", "hours": {"mon-sun": "00:00-24:00"},
                               "holidays": {"country": "DE"}})
    start = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)
    due = add_business_time(schedule, start, timedelta(hours=24))
    assert due.date() == date(2027, 1, 2)  # New Year's Day is closed even on an always-open week
    assert holidays_between(schedule, start, due) == [(date(2027, 1, 1), "Neujahr")]


@pytest.mark.parametrize(
    ("holidays", "at", "message"),
    [
        ({"country": "XX"}, ("holidays", "country"), "unknown country 'XX' (use the country's ISO 3166-1 alpha-2"),
        ({"country": "Germany"}, ("holidays", "country"), "did you mean 'DE' (Germany)?"),
        ({"country": "austria"}, ("holidays", "country"), "did you mean 'AT' (Austria)?"),
        ({"country": False}, ("holidays", "country"), "YAML read country as false: quote the code, e.g. 'NO'"),
        ({"country": "DE", "subdivision": "XY"}, ("holidays", "subdivision"),
         "unknown subdivision 'XY' of DE (one of: BB, BE, BW, BY, "),
        ({"country": "AQ", "subdivision": "X"}, ("holidays", "subdivision"), "AQ has no subdivisions"),
        ({"country": "DE", "categories": ["bank"]}, ("holidays", "categories"),
         "unknown category 'bank' of DE (one of: catholic, public, school)"),
        ({"country": "DE", "language": "fr"}, ("holidays", "language"), "unknown language 'fr' for DE (one of: de,"),
        ({"subdivision": "BY"}, ("holidays",), "a holiday calendar needs a country"),
        ({"country": "DE", "subdiv": "BY"}, ("holidays", "subdiv"), "unknown key 'subdiv' in holidays"),
        ({"country": "DE", "dates": ["2026-12-24", "24.12.2026"]}, ("holidays", "dates", 1),
         "bad holiday date '24.12.2026' (use YYYY-MM-DD)"),
        ({"country": "DE", "dates": "2026-12-24"}, ("holidays", "dates"), "dates must be a list"),
    ],
)
def test_bad_calendars_are_refused_with_the_choices(holidays: Any, at: tuple[str, ...], message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        office(**holidays)
    assert message in str(caught.value)
    assert caught.value.at == at


def test_bad_dates_in_the_plain_list_name_their_place() -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule({"hours": {"mon": "09:00-17:00"}, "holidays": ["2026-12-25", "soon"]})
    assert caught.value.at == ("holidays", 1)
