"""``mailgate report``: volume, first-response and resolution times, SLA compliance, per group.

Aggregated in Python from one query over the period's tickets: portable
across SQLite and PostgreSQL, and fast enough for the ticket volumes a
help desk sees in a reporting period.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from mailgate.storage.db import Database
from mailgate.storage.model import Ticket

GROUPS = ("all", "department", "assignee", "priority", "help_topic")


@dataclass(frozen=True)
class Row:
    group_by: str
    group: str
    tickets: int
    open: int  # open or in progress: the desk's turn
    awaiting_reply: int  # the customer's turn; neither open nor resolved
    resolved: int
    first_response_avg_h: float | None
    first_response_median_h: float | None
    resolution_avg_h: float | None
    resolution_median_h: float | None
    first_response_sla_pct: float | None
    resolution_sla_pct: float | None
    satisfaction_avg: float | None


def _hours(deltas: list[timedelta]) -> tuple[float | None, float | None]:
    if not deltas:
        return None, None
    hours = [d.total_seconds() / 3600 for d in deltas]
    return round(statistics.fmean(hours), 2), round(statistics.median(hours), 2)


def _pct(pairs: Iterable[tuple[datetime | None, datetime | None]], now: datetime) -> float | None:
    """Share of targets met, among targets already met or already missed (still running ones wait)."""
    judged = [(done, due) for done, due in pairs if due is not None and (done is not None or due < now)]
    if not judged:
        return None
    return round(100 * sum(1 for done, due in judged if done is not None and done <= due) / len(judged), 1)


def _mean(values: list[int]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def _row(group_by: str, group: str, tickets: list[Ticket], now: datetime) -> Row:
    first = [t.first_response_at - t.created_at for t in tickets if t.first_response_at]
    resolved = [t.resolved_at - t.created_at for t in tickets if t.resolved_at]
    fr_avg, fr_med = _hours(first)
    res_avg, res_med = _hours(resolved)
    return Row(
        group_by,
        group,
        len(tickets),
        sum(1 for t in tickets if t.status in ("open", "in_progress")),
        sum(1 for t in tickets if t.status == "awaiting_reply"),
        sum(1 for t in tickets if t.resolved_at is not None),
        fr_avg,
        fr_med,
        res_avg,
        res_med,
        _pct(((t.first_response_at, t.first_response_due) for t in tickets), now),
        _pct(((t.resolved_at, t.resolution_due) for t in tickets), now),
        _mean([t.satisfaction for t in tickets if t.satisfaction is not None]),
    )


def build(db: Database, since: datetime | None, until: datetime | None, now: datetime) -> list[Row]:
    query = select(Ticket).order_by(Ticket.id)
    if since is not None:
        query = query.where(Ticket.created_at >= since)
    if until is not None:
        query = query.where(Ticket.created_at < until)
    with db.reader() as session:
        tickets = list(session.scalars(query))
    rows = [_row("all", "all", tickets, now)]
    for group_by in GROUPS[1:]:
        buckets: dict[str, list[Ticket]] = {}
        for ticket in tickets:
            buckets.setdefault(getattr(ticket, group_by) or "(none)", []).append(ticket)
        rows += [_row(group_by, name, buckets[name], now) for name in sorted(buckets)]
    return rows


def as_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [dict(row.__dict__) for row in rows]


def as_csv(rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(Row.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(as_json(rows))
    return out.getvalue()


def as_table(rows: list[Row]) -> str:
    def fmt(value: float | None, unit: str = "") -> str:
        return "-" if value is None else f"{value:g}{unit}"

    head = (
        f"{'group':<32} {'tickets':>7} {'open':>5} {'waiting':>7} {'resolved':>8} {'1st resp avg/med':>17} "
        f"{'resolution avg/med':>19} {'SLA 1st':>7} {'SLA res':>7} {'rating':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r.group if r.group_by == "all" else f"{r.group_by}: {r.group}"
        lines.append(
            f"{name[:32]:<32} {r.tickets:>7} {r.open:>5} {r.awaiting_reply:>7} {r.resolved:>8} "
            f"{fmt(r.first_response_avg_h, 'h') + '/' + fmt(r.first_response_median_h, 'h'):>17} "
            f"{fmt(r.resolution_avg_h, 'h') + '/' + fmt(r.resolution_median_h, 'h'):>19} "
            f"{fmt(r.first_response_sla_pct, '%'):>7} {fmt(r.resolution_sla_pct, '%'):>7} "
            f"{fmt(r.satisfaction_avg):>6}"
        )
    lines.append("open: open or in progress; waiting: awaiting the customer's reply; resolved: ever resolved")
    return "\n".join(lines)
