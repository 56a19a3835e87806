"""A rule's rejection reaches the sender: by SMTP 550 on the listener, by mail when the mail came from IMAP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.domain import Envelope, Source
from mailgate.errors import Rejected
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage.model import Outbox
from tests.conftest import MakeConfig

RULES: dict[str, Any] = {
    "help_topics": [{"name": "General"}],
    "default_help_topic": "General",
    "rules": [
        {
            "name": "no-sales",
            "when": {"all": [{"field": "subject", "op": "contains", "value": "offer"}]},
            "then": {"reject": "We do not accept sales offers at this address."},
        }
    ],
}


@pytest.fixture
def rejecting(make_config: MakeConfig) -> Iterator[Context]:
    ctx = build_context(load_config(make_config(rules=RULES)))
    ctx.db.upgrade()
    yield ctx
    ctx.db.dispose()


def _send(ctx: Context, source: Source, subject: str, sender: str = "seller@vendor.example", extra: str = "") -> None:
    raw = f"From: {sender}\r\nTo: support@example.com\r\n{extra}Subject: {subject}\r\n\r\nbuy\r\n".encode()
    with pytest.raises(Rejected, match="sales offers"):
        ingest(raw, Envelope(sender, ("support@example.com",), source, datetime.now(UTC), mailbox="support"), ctx)


def _notices(ctx: Context) -> list[tuple[str, str]]:
    with ctx.db.reader() as session:
        rows = session.scalars(select(Outbox).where(Outbox.kind == "rejected")).all()
        return [(r.recipient, r.text) for r in rows]


def test_imap_sender_is_told_by_mail(rejecting: Context) -> None:
    _send(rejecting, "imap", "Special offer")
    [(to, text)] = _notices(rejecting)
    assert to == "seller@vendor.example" and "We do not accept sales offers" in text
    _send(rejecting, "imap", "Special offer")  # the same mail again: one notice
    assert len(_notices(rejecting)) == 1


def test_smtp_sender_hears_the_550_and_gets_no_mail(rejecting: Context) -> None:
    _send(rejecting, "smtp", "Another offer")
    assert _notices(rejecting) == []


def test_machine_sender_gets_no_notice(rejecting: Context) -> None:
    _send(rejecting, "imap", "Automatic offer", extra="Auto-Submitted: auto-generated\r\n")
    assert _notices(rejecting) == []
