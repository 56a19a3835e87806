"""SLA sweep cost: 100,000 open tickets, 1 % due; one sweep, then one no-op sweep.

    .venv/bin/python -m bench.sla_sweep [--tickets 100000] [--pg postgresql+psycopg://...]

Tickets and timers are bulk-inserted (the ingest path is benchmarked elsewhere);
each ticket has the demo ``critical`` plan's four pending steps, 1 % of tickets
have their 75 % step due. The sweep fires those steps (events, assignee mail
queued in the outbox); the no-op sweep finds nothing due.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import yaml
from sqlalchemy import insert, text

from bench.common import demo_config, machine
from mailgate.clock import FixedClock
from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.jobs.sla_sweep import sweep
from mailgate.storage.model import SlaTimer, Ticket


def run(url: str | None, tickets: int, folder: Path) -> tuple[float, int, float]:
    path = demo_config(folder)
    if url:
        main = yaml.safe_load(path.read_text())
        main["database"] = {"url": url}
        path.write_text(yaml.safe_dump(main, sort_keys=False))
    clock = FixedClock()
    ctx = build_context(load_config(path), clock)
    if url:
        with ctx.db.engine.begin() as conn:
            conn.execute(
                text(
                    "DROP TABLE IF EXISTS sla_timer, event, outbox, thread_ref, attachment, message, "
                    "participant, inbound, ticket, suppression, mailbox_state, alembic_version CASCADE"
                )
            )
    ctx.db.upgrade()
    now = clock.now()
    due_every = 100
    with ctx.db.engine.begin() as conn:
        for start in range(0, tickets, 10_000):
            rows = [
                {
                    "id": i + 1,
                    "number": f"{i + 1:07d}",
                    "subject": f"ticket {i}",
                    "status": "open",
                    "priority": "high",
                    "department": "Sys Admin",
                    "assignee": "jane@example.com",
                    "sla_plan": "critical",
                    "requester_email": f"c{i}@customer.example",
                    "created_at": now,
                    "updated_at": now,
                    "first_response_due": now + timedelta(hours=1),
                    "resolution_due": now + timedelta(hours=4),
                    "sla_running_since": now,
                }
                for i in range(start, min(start + 10_000, tickets))
            ]
            conn.execute(insert(Ticket), rows)
            timers = []
            for row in rows:
                early = row["id"] % due_every == 0  # this one's 75 % step is already due
                for target, step, after in (
                    ("first_response", 75, 45),
                    ("first_response", 100, 60),
                    ("resolution", 75, 180),
                    ("resolution", 100, 240),
                ):
                    due_at = (
                        now - timedelta(minutes=1)
                        if early and step == 75 and target == "first_response"
                        else now + timedelta(minutes=after)
                    )
                    timers.append(
                        {
                            "ticket_id": row["id"],
                            "target": target,
                            "step": step,
                            "plan": "critical",
                            "due_at": due_at,
                            "fired_at": None,
                            "fired_by": None,
                        }
                    )
            conn.execute(insert(SlaTimer), timers)
        if not ctx.db.is_sqlite:
            conn.execute(text("ANALYZE"))
    t0 = time.perf_counter()
    fired = sweep(ctx)
    busy = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert sweep(ctx) == 0
    idle = time.perf_counter() - t0
    ctx.db.dispose()
    return busy, fired, idle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--pg", help="a PostgreSQL URL (its tables are dropped and recreated!)")
    args = parser.parse_args()
    print(machine())
    for name, url in (("sqlite", None), ("postgresql", args.pg)):
        if name == "postgresql" and not url:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            busy, fired, idle = run(url, args.tickets, Path(tmp))
        print(
            f"{name:<10} {args.tickets} open tickets: sweep fired {fired} steps in {busy * 1000:.0f} ms "
            f"({busy / max(fired, 1) * 1000:.2f} ms/step); no-op sweep {idle * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
