"""`mailgate sla due --at TIME`: what the sweep would do then, in business hours, without changing anything."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.conftest import MakeConfig, run_cli

SLA: dict[str, Any] = {
    "schedules": {"business": {"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}}},
    "sla_plans": {"standard": {"first_response": "8h", "resolution": "3d", "schedule": "business",
                               "escalations": [{"at": "50%", "of": "first_response", "notify": ["assignee"]}]}},
}
RULES = {"help_topics": [{"name": "General", "department": "Support", "sla": "standard"}],
         "default_help_topic": "General"}


def test_sla_due_lists_steps_in_business_time(make_config: MakeConfig) -> None:
    config = make_config(rules=RULES, sla=SLA)
    mail = b"From: pat@customer.example\r\nTo: support@example.com\r\nSubject: Slow\r\n\r\nplease\r\n"
    assert run_cli(config, "ingest", stdin=mail).code == 0
    [ticket] = json.loads(run_cli(config, "tickets", "list", "--json").stdout)
    due = datetime.fromisoformat(ticket["first_response_due"])
    assert 9 <= due.astimezone(ZoneInfo("Europe/Berlin")).hour <= 17  # within opening hours

    now = json.loads(run_cli(config, "sla", "due", "--json").stdout)
    assert now == []  # nothing is due the moment the ticket opened
    # 3d of business time is 72 open hours, i.e. nine working days: a month later everything is due
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    steps = json.loads(run_cli(config, "sla", "due", "--at", later, "--json").stdout)
    assert {(s["number"], s["target"], s["step"]) for s in steps} == {
        (ticket["number"], "first_response", "50%"),
        (ticket["number"], "first_response", "100%"),
        (ticket["number"], "resolution", "100%"),
    }
    assert all(datetime.fromisoformat(s["due_at"]) <= datetime.fromisoformat(later) for s in steps)
    again = json.loads(run_cli(config, "sla", "due", "--at", later, "--json").stdout)
    assert again == steps  # read-only: asking twice changes nothing
