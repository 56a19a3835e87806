"""``mailgate report``: volume, first-response and resolution times, SLA compliance, per group.

Aggregated by the database (grouped counts and averages, medians with window
functions), in SQL that SQLite and PostgreSQL both run: the time grows with the
period's tickets, read through the index on ``created_at``, not with the database.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select, union_all

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


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(float(seconds) / 3600, 2)


def _seconds(later: Any, earlier: Any, dialect: str) -> Any:
    """``later - earlier`` in seconds, NULL when either is (SQLite keeps datetimes as text)."""
    if dialect == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later - earlier)


def _count_if(condition: Any) -> Any:
    return func.sum(case((condition, 1), else_=0))


def _pct(met: int | None, judged: int | None) -> float | None:
    return round(100 * (met or 0) / judged, 1) if judged else None


def _period(query: Any, since: datetime | None, until: datetime | None) -> Any:
    if since is not None:
        query = query.where(Ticket.created_at >= since)
    if until is not None:
        query = query.where(Ticket.created_at < until)
    return query


class _Median:
    """SQLite's median aggregate (it has none; PostgreSQL's is percentile_cont): the values of one group
    are gathered by SQLite as it reads them, once, with no sort of the whole period per grouping."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def step(self, value: float | None) -> None:
        if value is not None:
            self.values.append(value)

    def finalize(self) -> float | None:
        return statistics.median(self.values) if self.values else None


def _median(x: Any, dialect: str) -> Any:
    if dialect == "sqlite":
        return func.mailgate_median(x)
    return func.percentile_cont(0.5).within_group(x)


def _grouping(period: Any, group_by: str, now: datetime, dialect: str) -> Any:
    """One grouping's figures over the period's rows: counts, averages, medians and SLA shares."""
    p = period.c
    g = literal("all") if group_by == "all" else func.coalesce(p[group_by], "(none)")
    first_judged = and_(p.first_response_due.is_not(None),
                        or_(p.first_response_at.is_not(None), p.first_response_due < now))
    first_met = and_(p.first_response_at.is_not(None), p.first_response_at <= p.first_response_due)
    res_judged = and_(p.resolution_due.is_not(None), or_(p.resolved_at.is_not(None), p.resolution_due < now))
    res_met = and_(p.resolved_at.is_not(None), p.resolved_at <= p.resolution_due)
    return select(
        literal(group_by), g, func.count(),
        _count_if(p.status.in_(("open", "in_progress"))), _count_if(p.status == "awaiting_reply"),
        _count_if(p.resolved_at.is_not(None)),
        func.avg(p.first), _median(p.first, dialect),
        func.avg(p.resolution), _median(p.resolution, dialect),
        _count_if(and_(first_judged, first_met)), _count_if(first_judged),
        _count_if(and_(res_judged, res_met)), _count_if(res_judged),
        func.avg(p.satisfaction),
    ).group_by(g)


def build(db: Database, since: datetime | None, until: datetime | None, now: datetime) -> list[Row]:
    """Every figure is computed by the database, in one statement: the period's tickets are read through
    the index on created_at into a common table expression (SQLite and PostgreSQL materialise one that
    is used more than once) and each grouping is aggregated from it, medians included, so a month of a
    million-ticket desk never travels to Python as rows."""
    dialect = db.engine.dialect.name
    period = _period(select(
        Ticket.department, Ticket.assignee, Ticket.priority, Ticket.help_topic,
        Ticket.status, Ticket.resolved_at, Ticket.satisfaction,
        Ticket.first_response_at, Ticket.first_response_due, Ticket.resolution_due,
        _seconds(Ticket.first_response_at, Ticket.created_at, dialect).label("first"),
        _seconds(Ticket.resolved_at, Ticket.created_at, dialect).label("resolution"),
    ).where(Ticket.merged_into.is_(None)), since, until).cte("period")  # a merged ticket is counted as its survivor
    query = union_all(*(_grouping(period, group_by, now, dialect) for group_by in GROUPS))
    with db.reader() as session:
        if dialect == "sqlite":
            raw = session.connection().connection.dbapi_connection
            raw.create_aggregate("mailgate_median", 1, _Median)  # type: ignore[union-attr]
        found: list[Any] = sorted(session.execute(query).all(), key=lambda row: (GROUPS.index(row[0]), str(row[1])))
    if not found or found[0][0] != "all":
        found.insert(0, ("all", "all", 0, 0, 0, 0, None, None, None, None, 0, 0, 0, 0, None))
    return [
        Row(group_by, str(name), int(count), int(open_ or 0), int(waiting or 0), int(resolved or 0),
            _hours(fr_avg), _hours(fr_med), _hours(res_avg), _hours(res_med),
            _pct(fr_met, fr_judged), _pct(res_met, res_judged), None if rating is None else round(float(rating), 2))
        for (group_by, name, count, open_, waiting, resolved, fr_avg, fr_med, res_avg, res_med, fr_met, fr_judged,
             res_met, res_judged, rating) in found
    ]


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
