"""A schedule closed on a country's holidays, end to end: a mail over SMTP to a running daemon gets
due times past the holidays, `sla due` names the holidays that moved them, and `check-config`
refuses a country or subdivision the calendar does not know, naming its line in sla.yaml.

The daemon runs on the real clock (serve has no other): the targets are long enough to cross
holidays from any day of the year, and the expected due times are computed from the package's own
dates through the plain list of dates, independently of the calendar code under test.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import holidays as calendars

from mailgate.hours import add_business_time, parse_schedule
from tests.conftest import (
    MakeConfig,
    cli_json,
    make_mail,
    run_cli,
    smtp_deliver,
    start_service,
    wait_until,
)

BERLIN = ZoneInfo("Europe/Berlin")
HOURS = {"mon-fri": "09:00-17:00"}
RULES = {"help_topics": [{"name": "General", "department": "Support", "sla": "standard"}],
         "default_help_topic": "General"}


def _sla(holidays: Any) -> dict[str, Any]:
    return {
        "schedules": {"bavaria": {"timezone": "Europe/Berlin", "hours": HOURS, "holidays": holidays}},
        "sla_plans": {"standard": {"first_response": "8h", "resolution": "1000h", "schedule": "bavaria"}},
    }


def _bavarian_days(first_year: int) -> dict[date, str]:
    return dict(calendars.country_holidays("DE", subdiv="BY", years=range(first_year, first_year + 3), language="de"))


def _at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=BERLIN)


def _a_working_day_ahead(closed: dict[date, str]) -> date:
    day = datetime.now(BERLIN).date() + timedelta(days=2)
    while day.weekday() >= 5 or day in closed:
        day += timedelta(days=1)
    return day


def test_a_mail_to_the_daemon_gets_due_times_past_the_holidays(make_config: MakeConfig, tmp_path: Path) -> None:
    closed = _bavarian_days(datetime.now(BERLIN).year)
    listed = _a_working_day_ahead(closed)
    config = make_config(rules=RULES, sla=_sla({"country": "DE", "subdivision": "BY", "dates": [listed]}))
    svc = start_service(config, tmp_path / "serve.log")
    try:
        code, text = smtp_deliver(svc.host, svc.port, make_mail("Invoice question"))
        assert code == 250, text
        [ticket] = wait_until(lambda: cli_json(config, "tickets", "list"), what="the ticket", log=svc.output)
    finally:
        svc.stop()
    shown = cli_json(config, "tickets", "show", ticket["number"])
    opened = datetime.fromisoformat(shown["created_at"])
    by_date = parse_schedule({"timezone": "Europe/Berlin", "hours": HOURS, "holidays": [*closed, listed]})
    no_holidays = parse_schedule({"timezone": "Europe/Berlin", "hours": HOURS})
    resolution_due = datetime.fromisoformat(shown["resolution_due"])
    assert datetime.fromisoformat(shown["first_response_due"]) == add_business_time(by_date, opened, timedelta(hours=8))
    assert resolution_due == add_business_time(by_date, opened, timedelta(hours=1000))
    assert resolution_due > add_business_time(no_holidays, opened, timedelta(hours=1000))

    later = (resolution_due + timedelta(seconds=1)).isoformat()
    steps = {s["target"]: s for s in cli_json(config, "sla", "due", "--at", later)}
    resolution = steps["resolution"]
    assert datetime.fromisoformat(resolution["due_at"]) == resolution_due

    def was_open(d: date) -> bool:  # would have been open between the mail and its due time
        return d.weekday() < 5 and max(opened, _at(d, 9)) < min(resolution_due, _at(d, 17))

    expected = [{"date": d.isoformat(), "name": "configured date" if d == listed else closed[d]}
                for d in sorted({*closed, listed}) if was_open(d)]
    assert resolution["holidays"] == expected
    assert {"date": listed.isoformat(), "name": "configured date"} in expected
    assert len(expected) >= 2  # 1000 business hours are half a year: Bavaria has holidays in every such stretch
    table = run_cli(config, "sla", "due", "--at", later)
    assert table.code == 0, table.stderr
    [row] = [line for line in table.stdout.splitlines() if " resolution " in line]
    moved = "; ".join(f"{h['date']} {h['name']}" for h in expected)
    assert f"moved over holidays: {moved}" in row


def _sla_yaml(config: Path, text: str) -> Path:
    path = config.parent / "sla.yaml"
    path.write_text(text)
    return path


def test_check_config_names_the_line_of_an_unknown_country_or_subdivision(make_config: MakeConfig) -> None:
    config = make_config()  # the demo's rules.yaml: a rule binds schedule 'business' (checked there too)
    sla = _sla_yaml(config, """\
schedules:
  business:
    timezone: Europe/Berlin
    hours: {mon-fri: "09:00-17:00"}
    holidays:
      country: DE
      subdivision: XY
      dates: [2026-12-24]
  germany:
    timezone: Europe/Berlin
    hours: {mon-fri: "09:00-17:00"}
    holidays: {country: Germany}
  oslo:
    timezone: Europe/Oslo
    hours: {mon-fri: "08:00-16:00"}
    holidays:
      country: NO
sla_plans:
  critical: {first_response: 1h, resolution: 4h, schedule: 24x7}
  standard: {first_response: 8h, resolution: 3d, schedule: business}
""")
    result = run_cli(config, "check-config")
    assert result.code == 1, result.stdout
    assert result.stderr.strip().splitlines() == [
        f"{sla}:7: schedule 'business': unknown subdivision 'XY' of DE "
        "(one of: BB, BE, BW, BY, HB, HE, HH, MV, NI, NW, RP, SH, SL, SN, ST, TH, Augsburg)",
        f"{sla}:12: schedule 'germany': unknown country 'Germany' (did you mean 'DE' (Germany)?)",
        f"{sla}:17: schedule 'oslo': YAML read country as false: quote the code, e.g. 'NO'",
    ]


def test_check_config_accepts_a_country_calendar(make_config: MakeConfig) -> None:
    config = make_config(rules=RULES, sla=_sla({"country": "DE", "subdivision": "BY", "categories": ["public"],
                                                 "language": "en_US", "dates": ["2026-12-24"]}))
    result = run_cli(config, "check-config")
    assert result.code == 0, result.stderr


def test_rules_test_shows_the_due_times_and_the_holidays_that_moved_them(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    closed = _bavarian_days(datetime.now(BERLIN).year)
    listed = _a_working_day_ahead(closed)
    config = make_config(rules=RULES, sla=_sla({"country": "DE", "subdivision": "BY", "dates": [listed]}))
    eml = tmp_path / "mail.eml"
    eml.write_bytes(make_mail("Invoice question"))
    report = cli_json(config, "rules", "test", str(eml))
    sla = report["sla"]
    assert sla["plan"] == "standard" and set(sla["due"]) == {"first_response", "resolution"}
    moved = {h["date"]: h["name"] for h in sla["due"]["resolution"]["moved_over"]}
    assert moved[listed.isoformat()] == "configured date"  # 1000 business hours cross the listed day
    assert any(date.fromisoformat(d) in closed for d in moved), moved  # and the calendar's own holidays
    due = datetime.fromisoformat(sla["due"]["resolution"]["due"])
    assert due > datetime.now(BERLIN) + timedelta(days=170)
    text = run_cli(config, "rules", "test", str(eml)).stdout
    assert "sla standard: resolution due " in text and "(moved over holidays: " in text
