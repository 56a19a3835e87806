"""`mailgate report`: volume and times per group, over real tickets in the real database.

Tickets are opened through the pipeline; their first response and resolution are set
on the rows directly, standing in for the agent replies and status commands that set
them in production.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

from mailgate.clock import FixedClock
from mailgate.domain import Envelope
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage.store import Store
from tests.conftest import run_cli


def _open(ctx: Context, clock: FixedClock, n: int, to: str) -> str:
    raw = f"From: c{n}@customer.example\r\nTo: {to}\r\nSubject: Case {n}\r\nMessage-ID: <r{n}@c.example>\r\n\r\nx\r\n"
    outcome = ingest(raw.encode(), Envelope(f"c{n}@customer.example", (to,), "pipe", clock.now()), ctx)
    assert outcome.number is not None
    return outcome.number


def test_report_groups_and_times(ctx: Context, clock: FixedClock, config_path: Path) -> None:
    start = clock.now()
    numbers = [
        _open(ctx, clock, 1, "support@example.com"),
        _open(ctx, clock, 2, "support@example.com"),
        _open(ctx, clock, 3, "outage@example.com"),
    ]
    with ctx.db.transaction() as session:
        store = Store(session)
        first, second, third = (store.ticket_by_number(n) for n in numbers)
        assert first and second and third
        first.first_response_at, first.first_response_due = start + timedelta(hours=1), start + timedelta(hours=8)
        first.resolved_at, first.resolution_due, first.status = (
            start + timedelta(hours=4),
            start + timedelta(hours=2),
            "resolved",
        )
        second.first_response_at, second.first_response_due = start + timedelta(hours=3), start + timedelta(hours=8)
        second.status = "awaiting_reply"  # answered: the customer's turn, told apart from open
        third.first_response_at, third.first_response_due = start + timedelta(hours=2), start + timedelta(hours=1)

    rows = json.loads(run_cli(config_path, "report", "--format", "json").stdout)
    overall = next(r for r in rows if r["group_by"] == "all")
    assert (overall["tickets"], overall["open"], overall["awaiting_reply"], overall["resolved"]) == (3, 1, 1, 1)
    assert overall["first_response_avg_h"] == 2.0 and overall["first_response_median_h"] == 2.0
    assert overall["resolution_avg_h"] == 4.0
    assert overall["first_response_sla_pct"] == 66.7  # two of three first responses in time
    assert overall["resolution_sla_pct"] == 0.0
    by_dept = {r["group"]: r["tickets"] for r in rows if r["group_by"] == "department"}
    assert by_dept == {"Support": 2, "Sys Admin": 1}
    by_priority = {r["group"]: r["tickets"] for r in rows if r["group_by"] == "priority"}
    assert by_priority == {"normal": 2, "emergency": 1}

    later = (start + timedelta(days=1)).date().isoformat()
    assert json.loads(run_cli(config_path, "report", "--since", later, "--format", "json").stdout)[0]["tickets"] == 0
    shown = run_cli(config_path, "report")
    table = shown.stdout
    assert "3 ticket(s) in " in shown.stderr and run_cli(config_path, "report", "-q").stderr == ""
    assert "department: Sys Admin" in table and "waiting: awaiting the customer's reply" in table
    parsed = list(csv.DictReader(io.StringIO(run_cli(config_path, "report", "--format", "csv").stdout)))
    assert parsed[0]["group"] == "all" and parsed[0]["tickets"] == "3"
