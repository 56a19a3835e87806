"""Does mailgate stay fast as the database fills? Ingest rate and read times at 0, 100k and 1M tickets.

For each size, a private demo config (ticket numbers of 8 digits: six give only a million) and a database
filled straight through SQL with that many tickets over three years, each with its requester, first
message, received mail, event and two thread references (one in, one out), as intake leaves them. Then:

- ingest: ``--mails`` mails stored in-process by the pipeline (``ingest()``, a commit each), half new
  tickets, half replies by In-Reply-To to random old tickets; mails per second of wall time and CPU per
  mail, and the ratio to the first size, a nearly empty database of 1,000 tickets (target: >= 0.9);
- reads: the CLI as a user runs it (a fresh process each, median of ``--runs``): ``tickets list`` (the
  default page), filtered by status and by requester, ``--json --limit 50``, and ``report`` for one month.

    .venv/bin/python -m bench.scale --sizes 1000 100000 1000000
    .venv/bin/python -m bench.scale --sizes 1000 100000 --database-url postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from bench.common import REPO, demo_config, machine

START = datetime(2024, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=3 * 365)
CHUNK = 20_000


def _config(folder: Path, url: str | None) -> Path:
    path = demo_config(folder)
    main = yaml.safe_load(path.read_text())
    main["tickets"] = {**(main.get("tickets") or {}), "number_format": "########"}
    if url:
        main["database"] = {"url": url}
    path.write_text(yaml.safe_dump(main, sort_keys=False))
    return path


def _fill(engine: sa.Engine, tickets: int) -> None:
    """``tickets`` tickets with their rows, in chunks; ids are assigned here so rows can refer to them."""
    meta = sa.MetaData()
    meta.reflect(engine, only=["ticket", "participant", "message", "inbound", "event", "thread_ref"])
    t = meta.tables
    rng = random.Random(1)
    step = SPAN / max(tickets, 1)
    with engine.begin() as conn:
        for first in range(1, tickets + 1, CHUNK):
            ids = range(first, min(first + CHUNK, tickets + 1))
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name in t}
            for i in ids:
                at = START + step * i
                who = f"c{i}@customer.example"  # (so that a bench reply from c<i> is the requester's own)
                status = rng.choice(["open", "in_progress", "awaiting_reply", "resolved", "closed", "closed"])
                answered = at + timedelta(minutes=rng.randint(5, 3000))
                rows["ticket"].append({
                    "id": i, "number": f"{i:08d}", "subject": f"Case {i}", "status": status, "priority": "normal",
                    "help_topic": rng.choice(["General", "Billing", "Outage"]), "department": "Support",
                    "assignee": rng.choice([None, "jane@example.com", "jerry@example.com"]), "sla_plan": "Standard",
                    "requester_email": who, "requester_name": "", "created_at": at, "updated_at": answered,
                    "first_response_due": at + timedelta(hours=8), "resolution_due": at + timedelta(hours=72),
                    "first_response_at": answered,
                    "resolved_at": answered + timedelta(hours=5) if status in ("resolved", "closed") else None,
                    "closed_at": None, "overdue": False, "conversation_index": None, "satisfaction": None,
                    "reminded_at": None, "sla_consumed": 0.0, "sla_running_since": None,
                    "first_response_breached": False, "resolution_breached": False,
                })
                rows["participant"].append({"id": i, "ticket_id": i, "email": who, "name": "", "role": "requester"})
                rows["inbound"].append({
                    "id": i, "received_at": at, "source": "smtp", "mailbox": None, "peer": "127.0.0.1",
                    "mail_from": who, "rcpt_tos": ["support@example.com"], "size": 900, "sha256": f"{i:064x}",
                    "message_id": f"<in{i}@customer.example>", "status": "accepted", "reason": None,
                    "ticket_id": i, "duplicate_of": None, "processed_at": at, "decision": None,
                })
                rows["message"].append({
                    "id": i, "ticket_id": i, "inbound_id": i, "kind": "customer", "from_email": who, "from_name": "",
                    "subject": f"Case {i}", "body": "It does not work.", "html": None,
                    "message_id": f"<in{i}@customer.example>", "created_at": at,
                })
                rows["event"].append({"id": i, "ticket_id": i, "at": at, "kind": "created", "actor": "system",
                                      "detail": ""})
                rows["thread_ref"] += [
                    {"id": 2 * i - 1, "message_id": f"<in{i}@customer.example>", "ticket_id": i, "direction": "in"},
                    {"id": 2 * i, "message_id": f"<out{i}@example.com>", "ticket_id": i, "direction": "out"},
                ]
            for name in ("ticket", "participant", "inbound", "message", "event", "thread_ref"):
                conn.execute(t[name].insert(), rows[name])
        if engine.dialect.name == "postgresql":
            for name in ("ticket", "participant", "inbound", "message", "event", "thread_ref"):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                     f"(SELECT coalesce(max(id), 1) FROM {name}))")
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


def _ingest(config: Path, tickets: int, mails: int) -> tuple[float, float]:
    """(mails per second, CPU ms per mail) for ``mails`` mails stored one commit each."""
    from mailgate.clock import SystemClock
    from mailgate.config import load_config
    from mailgate.daemon.context import build_context
    from mailgate.domain import Envelope
    from mailgate.pipeline.ingest import ingest

    ctx = build_context(load_config(config), SystemClock())
    rng = random.Random(2)
    batch = []
    for n in range(mails):
        tag = secrets.token_hex(4)
        if n % 2 and tickets:
            old = rng.randint(1, tickets)
            raw = (f"From: c{old}@customer.example\r\nTo: support@example.com\r\nSubject: Re: Case {old}\r\n"
                   f"Message-ID: <r{tag}@customer.example>\r\nIn-Reply-To: <out{old}@example.com>\r\n\r\nStill "
                   f"broken.\r\n")
        else:
            raw = (f"From: n{tag}@customer.example\r\nTo: support@example.com\r\nSubject: New case {tag}\r\n"
                   f"Message-ID: <n{tag}@customer.example>\r\n\r\nHelp.\r\n")
        batch.append(raw.encode())
    ingest(batch[0], Envelope("x@customer.example", ("support@example.com",), "smtp", datetime.now(UTC)), ctx)
    wall, cpu = time.perf_counter(), time.process_time()
    for raw in batch[1:]:
        ingest(raw, Envelope("x@customer.example", ("support@example.com",), "smtp", datetime.now(UTC)), ctx)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ctx.db.dispose()
    return (mails - 1) / wall, cpu * 1000 / (mails - 1)


def _read(config: Path, args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mailgate", *args, "-c", str(config)], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000],
                        help="ticket counts; the first is the baseline (a small one: replies need old tickets)")
    parser.add_argument("--mails", type=int, default=301)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", help="PostgreSQL URL (a schema of its own is made per size)")
    args = parser.parse_args()
    print(machine())
    empty: tuple[float, float] | None = None
    month = (START + SPAN / 2).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (month + timedelta(days=32)).replace(day=1)
    reads = {
        "tickets list": ["tickets", "list"],
        "tickets list --status open": ["tickets", "list", "--status", "open"],
        "tickets list --requester": ["tickets", "list", "--requester", "c7@customer.example"],
        "tickets list --json --limit 50": ["tickets", "list", "--json", "--limit", "50"],
        "report (one month)": ["report", "-q", "--since", month.date().isoformat(), "--until",
                               next_month.date().isoformat()],
    }
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            url = None
            admin = None
            if args.database_url:
                schema = f"scale_{secrets.token_hex(4)}"
                admin = sa.create_engine(args.database_url, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
                sep = "&" if "?" in args.database_url else "?"
                url = f"{args.database_url}{sep}options=-csearch_path%3D{schema}"
            try:
                config = _config(Path(tmp), url)
                subprocess.run([sys.executable, "-m", "mailgate", "db", "upgrade", "-c", str(config)], cwd=REPO,
                               check=True, stdout=subprocess.DEVNULL)
                from mailgate.config import load_database_url

                engine = sa.create_engine(load_database_url(config))
                started = time.perf_counter()
                _fill(engine, size)
                engine.dispose()
                filled = time.perf_counter() - started
                rate, cpu = _ingest(config, size, args.mails)
                if empty is None:
                    empty = (rate, cpu)
                print(f"\n{size:,} tickets (filled in {filled:.0f} s): ingest {rate:.0f} mails/s, {cpu:.1f} ms CPU "
                      f"per mail; ratio to the first size: rate {rate / empty[0]:.2f}, CPU {cpu / empty[1]:.2f}")
                for name, command in reads.items():
                    print(f"  {name:<32} {_read(config, command, args.runs):.2f} s")
            finally:
                if admin is not None:
                    with admin.connect() as conn:
                        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
                    admin.dispose()


if __name__ == "__main__":
    main()
