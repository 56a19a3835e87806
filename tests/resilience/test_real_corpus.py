"""Real mail from other mail projects' public test suites (tests/corpus/real/), each through the real pipeline
with the outcome its manifest entry asserts.

Hand-written fixtures show what their author thought of; these files show what MTAs, autoresponders and
mail clients actually send: DSNs from some thirty MTAs and gateways, vacation replies, read receipts and
abuse reports, replies whose quoted history each client lays out its own way, and charsets, encodings and
MIME structures that break parsers. A help desk lives or dies on three of those: a bounce must never
become a ticket (or a mail loop), machine mail must never be answered, and a customer's reply must be
stored without the history it quotes. ``tests/corpus/real/MANIFEST.yaml`` says per file which of these
applies, where the file comes from and under which licence.

Every test also checks what resilience means here: ``ingest`` raises nothing, and every mail ends as one
inbound row with a final status and no "internal error". Each file gets a fresh database (the ``ctx``
fixture on a migrated schema that is copied or emptied, not rebuilt), so one file's outcome cannot hide another's.
About 1 minute on SQLite and under 2 minutes on PostgreSQL for the ~125 files on a busy two-core machine.
"""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Iterator
from datetime import timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import MetaData, create_engine, func, select

from mailgate.clock import FixedClock
from mailgate.domain import Envelope, Outcome
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage.db import Database
from mailgate.storage.model import AttachmentRow, Inbound, Message, Outbox, Suppression, Ticket
from tests.conftest import PG_URL, make_mail

REAL = Path(__file__).resolve().parent.parent / "corpus" / "real"
ENTRIES: list[dict[str, Any]] = yaml.safe_load((REAL / "MANIFEST.yaml").read_text(encoding="utf-8"))["mails"]
SUPPORT = "support@example.com"
FINAL = {"accepted", "duplicate", "quarantined", "rejected", "discarded"}
_SUBJECT = re.compile(rb"^subject:[ \t]*", re.IGNORECASE | re.MULTILINE)


# --------------------------------------------------------------------------- a fresh database per file, fast
@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """One migrated database for the module, and its tables in the order they can be emptied: migrating
    takes about a second per database, which ~130 files cannot afford within two minutes. SQLite: a file
    each test copies. PostgreSQL: a schema of its own that each test empties (DELETE is ~5x faster than
    TRUNCATE here) before use."""
    if not PG_URL:
        path = tmp_path_factory.mktemp("template") / "mailgate.db"
        db = Database(f"sqlite:///{path}")
        db.upgrade()
        db.dispose()  # the last connection checkpoints the WAL into the file
        yield f"sqlite:///{path}", []
        return
    schema = f"mg_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    try:
        db = Database(url)
        db.upgrade()
        tables = MetaData()
        tables.reflect(db.engine)
        db.dispose()
        yield url, [t.name for t in reversed(tables.sorted_tables) if t.name != "alembic_version"]
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def db_url(tmp_path: Path, migrated_template: tuple[str, list[str]]) -> Iterator[str]:
    """Overrides the suite's ``db_url`` for this module: the migrated template, empty, for each file."""
    url, tables = migrated_template
    if url.startswith("sqlite"):
        target = tmp_path / "state" / "mailgate.db"
        target.parent.mkdir(parents=True)
        shutil.copyfile(url.split("///", 1)[1], target)
        yield f"sqlite:///{target}"
        return
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table in tables:
                conn.exec_driver_sql(f'DELETE FROM "{table}"')
    finally:
        engine.dispose()
    yield url


def _envelope(entry: dict[str, Any], clock: FixedClock) -> Envelope:
    env = entry["envelope"]
    return Envelope(env["mail_from"], (SUPPORT,), env["source"], clock.now())


def _with_tag(raw: bytes, tag: str) -> bytes:
    """The reply as it would come back to us: our ticket tag added to its subject, nothing else changed."""
    end = min((i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0), default=len(raw))
    found = _SUBJECT.search(raw, 0, end)
    assert found is not None, "a reply without a Subject header cannot carry a ticket tag"
    return raw[: found.end()] + tag.encode() + b" " + raw[found.end() :]


def _open_ticket(ctx: Context, clock: FixedClock, author: str) -> str:
    """The ticket the reply answers: opened by the reply's author the day before, as a customer would."""
    raw = make_mail("Question about my order", sender=author, message_id="<first-mail@customer.example>")
    outcome = ingest(raw, Envelope(author, (SUPPORT,), "smtp", clock.now()), ctx)
    assert outcome.status == "accepted" and outcome.number, outcome.reason
    clock.advance(timedelta(days=1))
    return outcome.number


def _outbox(ctx: Context) -> list[tuple[str, list[str]]]:
    with ctx.db.reader() as session:
        return [(kind, list(rcpts)) for kind, rcpts in session.execute(select(Outbox.kind, Outbox.recipients))]


def _count(ctx: Context, model: type[Any]) -> int:
    with ctx.db.reader() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _stored(ctx: Context, outcome: Outcome) -> tuple[Message, list[str]]:
    """The thread entry this mail became, and the names of its stored attachments."""
    with ctx.db.reader() as session:
        message = session.scalars(select(Message).where(Message.inbound_id == outcome.inbound_id)).one()
        names = list(session.scalars(select(AttachmentRow.filename).where(AttachmentRow.message_row_id == message.id)))
        session.expunge(message)
    return message, names


def _senders(raw: bytes, entry: dict[str, Any]) -> set[str]:
    """Every address the machine mail could be answered at: From, Reply-To, Sender and the envelope sender."""
    head = BytesHeaderParser(policy=compat32).parsebytes(raw)
    values = [str(head.get(h, "")) for h in ("From", "Reply-To", "Sender")]
    found = {a.lower() for _, a in getaddresses(values) if "@" in a}
    found |= {entry["envelope"]["mail_from"].strip("<>").lower(), entry.get("author", "")}
    return found - {""}


def _bounce(ctx: Context, outcome: Outcome) -> None:
    assert outcome.status == "quarantined", f"a bounce of nothing of ours was {outcome.status}"
    assert outcome.reason, "quarantined without a reason"
    assert _count(ctx, Ticket) == 0, "a bounce opened a ticket"
    assert _outbox(ctx) == [], "a bounce caused outgoing mail"


def _auto_reply(ctx: Context, outcome: Outcome, raw: bytes, entry: dict[str, Any]) -> None:
    outbox = _outbox(ctx)
    assert [kind for kind, _ in outbox if kind == "ack_new"] == [], f"machine mail was acknowledged: {outbox}"
    answered = {r.lower() for _, rcpts in outbox for r in rcpts} & _senders(raw, entry)
    assert not answered, f"machine mail was answered at {sorted(answered)}: {outbox}"


def _new(ctx: Context, outcome: Outcome, entry: dict[str, Any]) -> None:
    assert outcome.status == "accepted" and outcome.number, f"{outcome.status}: {outcome.reason}"
    assert _count(ctx, Ticket) == 1
    acks = [rcpts for kind, rcpts in _outbox(ctx) if kind == "ack_new"]
    assert acks == [[entry["author"]]], f"expected one acknowledgment to {entry['author']}, got {acks}"
    message, names = _stored(ctx, outcome)
    for phrase in entry.get("keep", []):
        assert phrase in message.body, f"{phrase!r} lost from the stored text: {message.body[:600]!r}"
    missing = set(entry.get("attachments", [])) - set(names)
    assert not missing, f"attachments {sorted(missing)} not stored under that name; stored: {names}"


def _reply(ctx: Context, outcome: Outcome, entry: dict[str, Any], number: str) -> None:
    assert outcome.status == "accepted", f"{outcome.status}: {outcome.reason}"
    assert outcome.number == number, f"the reply went to ticket {outcome.number}, not {number}"
    assert _count(ctx, Ticket) == 1
    acks = [rcpts for kind, rcpts in _outbox(ctx) if kind == "ack_new"]
    assert len(acks) == 1, f"the reply was acknowledged like a new ticket: {acks}"
    message, _ = _stored(ctx, outcome)
    assert message.kind == "customer", message.kind
    body = message.body
    for phrase in entry["keep"]:
        assert phrase in body, f"new text {phrase!r} lost: {body[:600]!r}"
    assert body.lstrip().startswith(entry["keep"][0]), f"stored text does not start with the new text: {body[:600]!r}"
    for phrase in entry.get("drop", []):
        assert phrase not in body, f"quoted history {phrase!r} kept in the stored text: {body[:600]!r}"


def _quarantine(ctx: Context, outcome: Outcome) -> None:
    assert outcome.status == "quarantined", f"{outcome.status}: {outcome.reason}"
    assert _count(ctx, Ticket) == 0
    assert _outbox(ctx) == []


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_real_mail(ctx: Context, clock: FixedClock, entry: dict[str, Any]) -> None:
    raw = (REAL / entry["file"]).read_bytes()
    category = entry["category"]
    number = _open_ticket(ctx, clock, entry["author"]) if category == "reply" else None
    if number is not None:
        raw = _with_tag(raw, ctx.tag.tag(number))
    outcome = ingest(raw, _envelope(entry, clock), ctx)

    with ctx.db.reader() as session:
        rows = session.execute(select(Inbound.id, Inbound.status, Inbound.reason)).all()
    assert len(rows) == (2 if number else 1), f"one inbound row per mail received: {rows}"
    assert {status for _, status, _ in rows} <= FINAL, rows
    assert outcome.inbound_id in {row_id for row_id, _, _ in rows}
    assert not [r for _, _, r in rows if (r or "").startswith("internal error")], rows

    if category == "bounce":
        _bounce(ctx, outcome)
    elif category == "auto_reply":
        _auto_reply(ctx, outcome, raw, entry)
    elif category == "new":
        _new(ctx, outcome, entry)
    elif category == "reply":
        assert number is not None
        _reply(ctx, outcome, entry, number)
    elif category == "quarantine":
        _quarantine(ctx, outcome)
    else:
        pytest.fail(f"unknown category {category!r} in MANIFEST.yaml")


TAGGED = [e for e in ENTRIES if e.get("failed_recipient")]


@pytest.mark.parametrize("entry", TAGGED, ids=[e["file"] for e in TAGGED])
def test_ndr_that_names_our_ticket_only_by_its_tag_changes_nothing(
    ctx: Context, clock: FixedClock, entry: dict[str, Any]
) -> None:
    """Exchange-style NDRs repeat the bounced mail's subject, so the ticket tag of our mail shows up in
    theirs. But anyone can write a tag: a bounce that proves nothing else (not sent to our VERP address,
    not quoting our signed Message-ID) must not reach the ticket, nor stop mail to its requester, even
    when the address it reports as failed is that very requester."""
    failed = entry["failed_recipient"]
    number = _open_ticket(ctx, clock, failed)
    before = _outbox(ctx)
    raw = _with_tag((REAL / entry["file"]).read_bytes(), ctx.tag.tag(number))
    outcome = ingest(raw, _envelope(entry, clock), ctx)

    assert outcome.status == "quarantined", f"{outcome.status} (ticket {outcome.number}): {outcome.reason}"
    with ctx.db.reader() as session:
        ticket = session.scalars(select(Ticket)).one()
        entries = session.scalars(select(Message.kind).where(Message.ticket_id == ticket.id)).all()
        suppressed = session.scalars(select(Suppression.address)).all()
        statuses = session.scalars(select(Inbound.status)).all()
    assert ticket.number == number and ticket.status == "open"
    assert entries == ["customer"], f"the bounce was recorded on the ticket: {entries}"
    assert suppressed == [], f"an unproven bounce suppressed {suppressed}"
    assert _outbox(ctx) == before, "the bounce caused outgoing mail"
    assert sorted(statuses) == ["accepted", "quarantined"]


def test_manifest_covers_every_file_and_names_its_origin() -> None:
    """A file without an entry would never be tested; an entry without an origin could not be relicensed."""
    on_disk = sorted(str(p.relative_to(REAL)) for p in REAL.rglob("*.eml"))
    assert sorted(e["file"] for e in ENTRIES) == on_disk
    for entry in ENTRIES:
        origin = entry["origin"]
        assert origin["repository"] and origin["path"] and origin["licence"], entry["file"]
        assert re.fullmatch(r"[0-9a-f]{40}", origin["commit"]), entry["file"]
        assert entry["category"] in {"bounce", "auto_reply", "reply", "new", "quarantine"}, entry["file"]
        if entry["category"] in {"reply", "new"}:
            assert entry["author"] == entry["author"].lower() and "@" in entry["author"], entry["file"]
