"""The report computed by the database equals the same figures computed one ticket at a time.

Tickets come in through the pipeline; then their times, dues, statuses, assignees and ratings are set at
random (a fixed seed), odd and even group sizes included, some targets still running at "now". The
oracle below is the plain Python reading of each figure's definition (README: report); the report is
built by SQL on SQLite, and on PostgreSQL when the suite has one.
"""

from __future__ import annotations

import random
import statistics
from datetime import datetime, timedelta
from typing import Any

from mailgate.cli import report
from mailgate.clock import FixedClock
from mailgate.domain import Envelope
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage.model import Ticket
from mailgate.storage.store import Store


def _oracle(tickets: list[Ticket], group_by: str, now: datetime) -> dict[str, dict[str, Any]]:
    def hours(deltas: list[timedelta]) -> tuple[float | None, float | None]:
        if not deltas:
            return None, None
        h = [d.total_seconds() / 3600 for d in deltas]
        return round(statistics.fmean(h), 2), round(statistics.median(h), 2)

    def pct(pairs: list[tuple[datetime | None, datetime | None]]) -> float | None:
        judged = [(d, due) for d, due in pairs if due is not None and (d is not None or due < now)]
        if not judged:
            return None
        return round(100 * sum(1 for d, due in judged if d is not None and d <= due) / len(judged), 1)

    groups: dict[str, list[Ticket]] = {}
    for t in tickets:
        groups.setdefault("all" if group_by == "all" else (getattr(t, group_by) or "(none)"), []).append(t)
    out = {}
    for name, members in groups.items():
        fr = hours([t.first_response_at - t.created_at for t in members if t.first_response_at])
        res = hours([t.resolved_at - t.created_at for t in members if t.resolved_at])
        ratings = [t.satisfaction for t in members if t.satisfaction is not None]
        out[name] = {
            "tickets": len(members),
            "open": sum(1 for t in members if t.status in ("open", "in_progress")),
            "awaiting_reply": sum(1 for t in members if t.status == "awaiting_reply"),
            "resolved": sum(1 for t in members if t.resolved_at is not None),
            "first_response_avg_h": fr[0], "first_response_median_h": fr[1],
            "resolution_avg_h": res[0], "resolution_median_h": res[1],
            "first_response_sla_pct": pct([(t.first_response_at, t.first_response_due) for t in members]),
            "resolution_sla_pct": pct([(t.resolved_at, t.resolution_due) for t in members]),
            "satisfaction_avg": round(statistics.fmean(ratings), 2) if ratings else None,
        }
    return out


def test_sql_report_equals_the_ticket_by_ticket_figures(ctx: Context, clock: FixedClock) -> None:
    rng = random.Random(7)
    start = clock.now()
    for n in range(37):
        clock.advance(timedelta(minutes=rng.randint(1, 600)))
        raw = f"From: c{n}@customer.example\r\nTo: support@example.com\r\nSubject: Case {n}\r\n\r\nx\r\n"
        assert ingest(raw.encode(), Envelope(f"c{n}@customer.example", ("support@example.com",), "pipe",
                                             clock.now()), ctx).number
    now = clock.now()
    with ctx.db.transaction() as session:
        for t in Store(session).tickets():
            t.status = rng.choice(["open", "in_progress", "awaiting_reply", "resolved", "closed"])
            t.assignee = rng.choice([None, "jane@example.com", "jerry@example.com"])
            t.department = rng.choice([None, "Support", "Sys Admin"])
            t.priority = rng.choice(["low", "normal", "high"])
            t.first_response_due = t.created_at + timedelta(hours=rng.randint(1, 48))
            t.resolution_due = rng.choice([None, t.created_at + timedelta(hours=rng.randint(1, 96))])
            t.first_response_at = rng.choice([None, t.created_at + timedelta(minutes=rng.randint(5, 3000))])
            t.resolved_at = rng.choice([None, t.created_at + timedelta(minutes=rng.randint(60, 6000))])
            t.satisfaction = rng.choice([None, 1, 3, 4, 5])
    with ctx.db.reader() as session:
        tickets = list(Store(session).tickets())
    middle = start + (now - start) / 2
    for since, until in ((None, None), (middle, None), (start, middle)):
        chosen = [t for t in tickets if (since is None or t.created_at >= since) and (until is None or
                                                                                     t.created_at < until)]
        got = report.build(ctx.db, since, until, now)
        for group_by in report.GROUPS:
            expected = _oracle(chosen, group_by, now)
            rows = {r.group: {k: v for k, v in r.__dict__.items() if k not in ("group_by", "group")}
                    for r in got if r.group_by == group_by}
            assert sorted(rows) == sorted(expected), (group_by, since, until)
            for name in expected:
                for key, want in expected[name].items():
                    have = rows[name][key]
                    if key.endswith("_h") and want is not None and have is not None:
                        # hours rounded to 2 places: a value on a .005 tie may round either way
                        assert abs(have - want) < 0.0101, (group_by, name, key, have, want)
                    else:
                        assert have == want, (group_by, name, key, since, until)
            assert [r.group for r in got if r.group_by == group_by] == sorted(expected)
    assert any(r.first_response_median_h for r in got)  # (the figures are not all empty)
