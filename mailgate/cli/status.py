"""``mailgate status``: the cluster as the database sees it (daemons, mailbox leases, queues, SLA lag).

Read-only and answerable while every daemon is down: it reads the registry and
lease rows the daemons write, and says which daemon last held what.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mailgate.storage import leases, registry
from mailgate.storage.db import Database
from mailgate.storage.store import Store


def _seconds(value: datetime | None, now: datetime) -> float | None:
    return None if value is None else round((now - value).total_seconds(), 1)


def gather(db: Database, mailboxes: list[str], lease_time: float, now: datetime) -> dict[str, Any]:
    """Everything ``status`` shows, as the JSON it prints (``now``: for the queue ages)."""
    with db.reader() as session:
        daemons = registry.daemons(session, lease_time)
        held = {row.mailbox: row for row in leases.leases(session)}
        store = Store(session)
        depth = store.outbox_count("pending") + store.outbox_count("sending")
        oldest_at = store.oldest_pending_at()  # as the metric of the same name
        overdue, first_due = store.rungs_due(now)
    boxes = []
    for name in sorted(set(mailboxes) | set(held)):
        row = held.get(name)
        current = row if row is not None and row.expires_in > 0 else None
        boxes.append({
            "mailbox": name,
            "configured": name in mailboxes,
            "holder": current.holder if current else None,
            "token": row.token if row else None,
            "expires_in": round(current.expires_in, 1) if current else None,
            "last_holder": row.holder if row else None,
        })
    return {
        "daemons": [
            {
                "name": d.name, "host": d.host, "pid": d.pid, "version": d.version, "alive": d.alive,
                "up_for": round(d.up_for, 1), "last_seen_ago": round(d.last_seen_ago, 1),
                "stopped_ago": None if d.stopped_ago is None else round(d.stopped_ago, 1), "holds": d.holds,
            }
            for d in daemons
        ],
        "alive": sum(1 for d in daemons if d.alive),
        "mailboxes": boxes,
        "outbox": {"pending": depth, "oldest_pending_age": _seconds(oldest_at, now)},
        "sla": {"overdue_rungs": overdue, "sweep_lag": _seconds(first_due, now)},
    }


def render(status: dict[str, Any]) -> list[str]:
    lines = [f"daemons: {status['alive']} alive"]
    for d in status["daemons"]:
        state = "alive" if d["alive"] else ("stopped" if d["stopped_ago"] is not None else "silent")
        lines.append(
            f"  {d['name']:<28} {state:<8} {d['host']} pid {d['pid']} v{d['version']}, up {d['up_for']:.0f}s, "
            f"seen {d['last_seen_ago']:.0f}s ago, holds {', '.join(d['holds']) or 'nothing'}"
        )
    lines.append(f"mailboxes: {len(status['mailboxes'])}")
    for m in status["mailboxes"]:
        who = (f"held by {m['holder']} (token {m['token']}, {m['expires_in']:.0f}s left)" if m["holder"]
               else "NOT HELD" + (f" (last {m['last_holder']})" if m["last_holder"] else ""))
        lines.append(f"  {m['mailbox']:<28} {who}" + ("" if m["configured"] else "  [not in this config]"))
    outbox, sla = status["outbox"], status["sla"]
    age = outbox["oldest_pending_age"]
    lines.append(f"outbox: {outbox['pending']} pending" + (f", oldest {age:.0f}s" if age is not None else ""))
    lag = sla["sweep_lag"]
    late = f", oldest {lag:.0f}s late" if lag else ""
    lines.append(f"sla: {sla['overdue_rungs']} rung(s) due and not fired{late}")
    return lines
