"""``mailgate report``: volume, first-response and resolution times, SLA compliance, per group.

Aggregated by the database (grouped counts and averages, medians with window
functions), in SQL that SQLite and PostgreSQL both run: the time grows with the
period's tickets, read through the index on ``created_at``, not with the database.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select

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


def _group(group_by: str) -> Any:
    return literal("all") if group_by == "all" else func.coalesce(getattr(Ticket, group_by), "(none)")


def _medians(session: Any, group_by: str, measure: Any, since: datetime | None,
             until: datetime | None) -> dict[str, float | None]:
    """The median per group, in the database: the middle one or two rows of each group's ordered values
    (window functions, which SQLite and PostgreSQL both have; neither has to send the rows over)."""
    values = _period(select(_group(group_by).label("g"), measure.label("x")), since, until).where(
        measure.is_not(None)).subquery()
    ranked = select(
        values.c.g, values.c.x,
        func.row_number().over(partition_by=values.c.g, order_by=values.c.x).label("rn"),
        func.count().over(partition_by=values.c.g).label("n"),
    ).subquery()
    middle = select(ranked.c.g, func.avg(ranked.c.x)).where(
        ranked.c.rn.in_([(ranked.c.n + 1) // 2, (ranked.c.n + 2) // 2])).group_by(ranked.c.g)
    return {str(g): _hours(x) for g, x in session.execute(middle)}


def build(db: Database, since: datetime | None, until: datetime | None, now: datetime) -> list[Row]:
    """Every figure is computed by the database over the period's tickets (read through the index on
    created_at): a month of a million-ticket desk is a few grouped queries, not a million objects."""
    dialect = db.engine.dialect.name
    first = _seconds(Ticket.first_response_at, Ticket.created_at, dialect)
    resolution = _seconds(Ticket.resolved_at, Ticket.created_at, dialect)
    due_passed = {
        "first": and_(Ticket.first_response_due.is_not(None),
                      or_(Ticket.first_response_at.is_not(None), Ticket.first_response_due < now)),
        "resolution": and_(Ticket.resolution_due.is_not(None),
                           or_(Ticket.resolved_at.is_not(None), Ticket.resolution_due < now)),
    }
    met = {
        "first": and_(Ticket.first_response_at.is_not(None), Ticket.first_response_at <= Ticket.first_response_due),
        "resolution": and_(Ticket.resolved_at.is_not(None), Ticket.resolved_at <= Ticket.resolution_due),
    }
    rows: list[Row] = []
    with db.reader() as session:
        for group_by in GROUPS:
            g = _group(group_by)
            query = _period(select(
                g.label("g"),
                func.count(),
                _count_if(Ticket.status.in_(("open", "in_progress"))),
                _count_if(Ticket.status == "awaiting_reply"),
                _count_if(Ticket.resolved_at.is_not(None)),
                func.avg(first),
                func.avg(resolution),
                _count_if(and_(due_passed["first"], met["first"])),
                _count_if(due_passed["first"]),
                _count_if(and_(due_passed["resolution"], met["resolution"])),
                _count_if(due_passed["resolution"]),
                func.avg(Ticket.satisfaction),
            ), since, until).group_by(g)
            found: list[Any] = sorted(session.execute(query).all(), key=lambda r: str(r[0]))
            if group_by == "all" and not found:
                found = [("all", 0, 0, 0, 0, None, None, 0, 0, 0, 0, None)]
            if not found:
                continue
            first_median = _medians(session, group_by, first, since, until)
            resolution_median = _medians(session, group_by, resolution, since, until)
            for (name, count, open_, waiting, resolved, fr_avg, res_avg, fr_met, fr_judged, res_met, res_judged,
                 rating) in found:
                rows.append(Row(
                    group_by, str(name), int(count), int(open_ or 0), int(waiting or 0), int(resolved or 0),
                    _hours(fr_avg), first_median.get(str(name)), _hours(res_avg), resolution_median.get(str(name)),
                    _pct(fr_met, fr_judged), _pct(res_met, res_judged),
                    None if rating is None else round(float(rating), 2),
                ))
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
