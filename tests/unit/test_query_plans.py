"""Every statement of the intake hot path finds its rows through an index, never by reading a whole table.

A table that grows with mail (tickets, messages, thread references, events, the outbox...) read whole
on each mail makes intake slow down as the database fills: a missing index on ``thread_ref.ticket_id``
once cost 32 ms a mail at 100k tickets. The test stores a realistic mix (new tickets, replies by tag,
by In-Reply-To and by References, a duplicate, a bounce of an ack, an agent's reply, a stranger's
reply), records every statement the database was sent, and asks the database's planner how it would
run each: SQLite's ``EXPLAIN QUERY PLAN`` must name an index for every growing table, PostgreSQL's
``EXPLAIN`` (with sequential scans priced out, as a large table would) must show no ``Seq Scan`` on one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select

from mailgate.clock import FixedClock
from mailgate.domain import Envelope
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage import fastsql
from mailgate.storage.model import Outbox

GROWING = {"inbound", "inbound_raw", "ticket", "participant", "message", "attachment", "thread_ref", "event",
           "outbox", "sla_timer", "suppression"}


def _mail(subject: str, *, sender: str = "pat@customer.example", mid: str, extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: support@example.com\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n{extra}"
            f"\r\nSome text about {subject}.\r\n").encode()


def _store_a_mix(ctx: Context, clock: FixedClock, paused: list[bool]) -> None:
    def env(sender: str = "pat@customer.example") -> Envelope:
        return Envelope(sender, ("support@example.com",), "smtp", clock.now())

    first = ingest(_mail("Printer on fire", mid="a1@customer.example"), env(), ctx)
    ingest(_mail("Scanner broken", sender="lee@other.example", mid="b1@other.example"), env("lee@other.example"), ctx)
    paused[0] = True  # (the test's own look-up is not the hot path)
    with ctx.db.reader() as session:
        ack = session.scalars(select(Outbox).where(Outbox.kind == "ack_new")).first()
    paused[0] = False
    assert ack is not None and first.number
    tag = f"[#{first.number}]"
    ingest(_mail(f"Re: {tag} Printer on fire", mid="a2@customer.example"), env(), ctx)
    ingest(_mail("Re: Printer on fire", mid="a3@customer.example", extra=f"In-Reply-To: {ack.message_id}\r\n"),
           env(), ctx)
    ingest(_mail("Re: Printer", mid="a4@customer.example", extra="References: <a1@customer.example>\r\n"), env(), ctx)
    ingest(_mail("Printer on fire", mid="a1@customer.example"), env(), ctx)  # the same mail again
    ingest(_mail(f"Re: {tag} on it", sender="jane@example.com", mid="j1@example.com"), env("jane@example.com"), ctx)
    ingest(_mail(f"Re: {tag} me too", sender="eve@stranger.example", mid="e1@stranger.example"),
           env("eve@stranger.example"), ctx)
    dsn = (
        "From: MAILER-DAEMON@mx.customer.example\r\nTo: support@example.com\r\nSubject: Undelivered Mail\r\n"
        'Message-ID: <dsn1@mx.customer.example>\r\nContent-Type: multipart/report; report-type=delivery-status; '
        'boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n'
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.customer.example\r\n\r\n"
        "Final-Recipient: rfc822; pat@customer.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: support@example.com\r\nTo: pat@customer.example\r\nMessage-ID: {ack.message_id}\r\n--B--\r\n"
    ).encode()
    ingest(dsn, env(""), ctx)


class _Recording:
    """A DBAPI cursor that notes what it is asked to run (the pipeline's prebuilt statements bypass
    SQLAlchemy's events: storage/fastsql.py runs them on the cursor)."""

    def __init__(self, cursor: Any, note: Any) -> None:
        self._cursor, self._note = cursor, note

    def execute(self, sql: str, params: Any = None) -> Any:
        self._note(sql, params)
        return self._cursor.execute(sql, params)

    def executemany(self, sql: str, params: Any) -> Any:
        self._note(sql, params[0])
        return self._cursor.executemany(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def _statements(ctx: Context, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    seen: dict[str, Any] = {}
    paused = [False]

    def note(statement: str, parameters: Any) -> None:
        if paused[0]:
            return
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb in {"SELECT", "UPDATE", "DELETE", "WITH"} and statement not in seen:
            seen[statement] = parameters

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        note(statement, parameters[0] if executemany else parameters)

    original = fastsql._cursor

    @contextmanager
    def recording_cursor(conn: Any, sql: str, params: Any) -> Iterator[Any]:
        with original(conn, sql, params) as cursor:
            yield _Recording(cursor, note)

    monkeypatch.setattr(fastsql, "_cursor", recording_cursor)
    event.listen(ctx.db.engine, "before_cursor_execute", record)
    try:
        _store_a_mix(ctx, clock, paused)
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", record)
    return list(seen.items())


def _full_scans(ctx: Context, statements: list[tuple[str, Any]]) -> list[str]:
    found = []
    with ctx.db.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cur = raw.cursor()
        if ctx.db.is_sqlite:
            for statement, params in statements:
                cur.execute("EXPLAIN QUERY PLAN " + statement, params)
                for row in cur.fetchall():
                    detail = str(row[-1])
                    match = re.match(r"SCAN (\w+)", detail)
                    if match and match.group(1) in GROWING and "INDEX" not in detail:
                        found.append(f"{detail}\n    in: {statement}")
        else:
            cur.execute("SET enable_seqscan = off")
            for statement, params in statements:
                cur.execute("EXPLAIN (FORMAT JSON) " + statement, params)
                (plan,) = cur.fetchone()
                found += [f"{why}\n    in: {statement}" for why in _pg_whole_reads(plan[0]["Plan"])]
        raw.rollback()
    return found


def _pg_whole_reads(node: dict[str, Any]) -> list[str]:
    """Scans of a growing table that do not look rows up by an index condition: a Seq Scan, or an index
    walked from end to end (PostgreSQL's way of reading a whole table in key order)."""
    found = []
    kind, table = node.get("Node Type", ""), node.get("Relation Name")
    if table in GROWING and (kind == "Seq Scan" or (kind in {"Index Scan", "Index Only Scan"}
                                                      and "Index Cond" not in node)):
        found.append(f"{kind} on {table} ({node.get('Index Name', 'no index')})")
    for child in node.get("Plans", []):
        found += _pg_whole_reads(child)
    return found


def test_every_hot_path_statement_uses_an_index(ctx: Context, clock: FixedClock,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    statements = _statements(ctx, clock, monkeypatch)
    assert len(statements) >= 10  # (the mix did reach the database)
    assert any("thread_ref" in s for s, _ in statements) and any("participant" in s for s, _ in statements)
    scans = _full_scans(ctx, statements)
    assert not scans, "full scans of growing tables:\n" + "\n".join(scans)


def test_flood_control_counts_through_an_index(make_config: Any, clock: FixedClock,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """intake.flood counts a sender's and a domain's new tickets on every new mail (pipeline/flood.py)."""
    import sys

    from mailgate.config import load_config
    from mailgate.daemon.context import build_context

    path = make_config(intake={"flood": {"per_sender": "2/10m", "per_domain": "5/1h"}}, admin_email="it@example.com")
    context = build_context(load_config(path), clock)
    context.db.upgrade()
    plain = _store_a_mix

    def mix_and_flood(ctx: Context, clock: FixedClock, paused: list[bool]) -> None:
        plain(ctx, clock, paused)
        for i in range(2):  # pat's second new ticket, then one over the rung: held, the admin alerted
            env = Envelope("pat@customer.example", ("support@example.com",), "smtp", clock.now())
            ingest(_mail(f"Another thing {i}", mid=f"f{i}@customer.example"), env, ctx)

    monkeypatch.setattr(sys.modules[__name__], "_store_a_mix", mix_and_flood)
    try:
        statements = _statements(context, clock, monkeypatch)
        assert any("sender_domain" in s for s, _ in statements) and any("hold" in s for s, _ in statements)
        with context.db.reader() as session:
            held = session.scalars(select(Outbox).where(Outbox.kind == "admin_alert")).all()
        assert len(held) == 1
        scans = _full_scans(context, statements)
        assert not scans, "full scans of growing tables:\n" + "\n".join(scans)
    finally:
        context.db.dispose()
