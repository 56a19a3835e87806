"""Every corpus mail through the real ingest into the real database (SQLite, or PostgreSQL when
MAILGATE_TEST_DATABASE_URL is set): what parse() produces must also be storable there."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from mailgate.domain import Envelope
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage.model import AttachmentRow, Inbound, Message

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
ALL = sorted(CORPUS.glob("*.eml"))
# a bounce that belongs to no ticket has nothing to be appended to: it is kept in quarantine
EXPECTED = {"dsn-bounce": "quarantined"}


def _env() -> Envelope:
    return Envelope("someone@customer.example", ("support@example.com",), "pipe", datetime(2026, 3, 10, tzinfo=UTC))


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_corpus_mail_is_stored(ctx: Context, path: Path) -> None:
    outcome = ingest(path.read_bytes(), _env(), ctx)
    assert outcome.status == EXPECTED.get(path.stem, "accepted"), outcome.reason
    with ctx.db.reader() as session:
        row = session.get(Inbound, outcome.inbound_id)
        assert row is not None and row.status == outcome.status
        assert not (row.reason or "").startswith("internal error"), row.reason


def test_stored_html_and_attachments_survive_the_database(ctx: Context) -> None:
    ingest((CORPUS / "html-only.eml").read_bytes(), _env(), ctx)
    ingest((CORPUS / "winmail-dat.eml").read_bytes(), _env(), ctx)
    ingest((CORPUS / "attachment-rfc2231-filename.eml").read_bytes(), _env(), ctx)
    with ctx.db.reader() as session:
        html = session.scalars(select(Message.html).where(Message.subject == "Order 5531 arrived damaged")).one()
        assert html is not None and "<script" not in html and "onclick" not in html
        names = set(session.scalars(select(AttachmentRow.filename)))
    assert {"Quarterly report.txt", "Übersicht März.csv", "Übersicht März.pdf", "passwd"} <= names
    assert "winmail.dat" not in names
