"""Outgoing mail's bytes: the header shortcut writes exactly what compat32 would, and a composed mail
reads back (``policy.default``) with the headers and both alternatives intact."""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import Header
from email.policy import compat32

from mailgate.outbound.compose import WIRE, compose
from mailgate.storage.model import Outbox

NAMES = ["Subject", "To", "From", "In-Reply-To", "References", "X-Mailgate-Loop", "Message-ID", "Auto-Submitted"]


def test_the_header_shortcut_writes_what_compat32_writes() -> None:
    reference = compat32.clone(linesep="\r\n")
    rng = random.Random(3)
    alphabet = string.ascii_letters + string.digits + " \t,;:<>@.=?-_\"'()[]#" + "äß€"
    shortcut = 0
    for _ in range(20_000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        if rng.random() < 0.7:
            value = " ".join(value.split())
        name = rng.choice(NAMES)
        assert WIRE.fold_binary(name, value) == reference.fold_binary(name, value), (name, value)
        shortcut += value.isascii() and value.isprintable() and len(name) + 2 + len(value) <= 78
    assert shortcut > 2_000, "the comparison never took the shortcut"
    encoded = Header("Grüße aus Köln", "utf-8")
    assert WIRE.fold_binary("Subject", encoded) == reference.fold_binary("Subject", encoded)  # type: ignore[arg-type]


def _row(**changes: object) -> Outbox:
    fields: dict[str, object] = {
        "id": 7,
        "mail_from": "Support <support@example.com>",
        "recipients": ["pat@customer.example"],
        "subject": "[#123456] Re: Printer on fire, and a subject long enough to be folded onto a second line",
        "headers": {"In-Reply-To": "<q1@customer.example>", "References": "<q1@customer.example>"},
        "text": "Hello Pat,\n--\nwe got your mail. Grüße\n",
        "html": "<p>Hello Pat</p>",
        "message_id": "<ack1@example.com>",
        "attachments": [],
    }
    fields.update(changes)
    return Outbox(**fields)


def test_a_composed_mail_reads_back_whole() -> None:
    now = datetime(2026, 3, 2, 10, tzinfo=UTC)
    data = compose(_row(), "example.com; sig", now)
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    msg = message_from_bytes(data, policy=policy.default)
    assert msg["Subject"] == _row().subject
    assert msg["In-Reply-To"] == "<q1@customer.example>" and msg["Message-ID"] == "<ack1@example.com>"
    assert msg["X-Mailgate-Loop"] == "example.com; sig" and msg["X-Auto-Response-Suppress"] == "All"
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = (part.get_content() for part in msg.iter_parts())
    assert plain == "Hello Pat,\n--\nwe got your mail. Grüße\n"
    assert html == "<p>Hello Pat</p>"
    assert msg.get_boundary() != message_from_bytes(compose(_row(), "x", now), policy=policy.default).get_boundary()
