"""classify(): new / reply / bounce / auto-reply / loop, one rule at a time (pure function, real parse)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgate.domain import Envelope, Kind, Source
from mailgate.identity import Identity
from mailgate.pipeline.classify import classify
from mailgate.pipeline.parse import parse

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
IDENTITY = Identity(b"unit-test-secret-0123456789abcdef", "example.com")
OWN = frozenset({"support@example.com", "outage@example.com"})


def envelope(mail_from: str = "customer@customer.example", source: Source = "smtp") -> Envelope:
    return Envelope(mail_from, ("support@example.com",), source, datetime(2026, 3, 10, tzinfo=UTC))


def mail(*headers: str, sender: str = "Pat <pat@customer.example>", subject: str = "Printer on fire") -> bytes:
    lines = [f"From: {sender}", "To: support@example.com", f"Subject: {subject}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\nHello.\r\n").encode()


def kind_of(raw: bytes, env: Envelope | None = None) -> tuple[Kind, str]:
    result = classify(parse(raw), env or envelope(), IDENTITY, OWN)
    return result.kind, result.reason


def corpus_kind(name: str) -> Kind:
    return kind_of((CORPUS / f"{name}.eml").read_bytes())[0]


# --------------------------------------------------------------------------- new and reply
def test_plain_new_mail() -> None:
    kind, reason = kind_of(mail())
    assert kind is Kind.NEW and reason == "no thread headers"


@pytest.mark.parametrize("header", ["In-Reply-To: <x@customer.example>", "References: <a@x.example> <b@x.example>"])
def test_thread_headers_make_a_reply(header: str) -> None:
    assert kind_of(mail(header))[0] is Kind.REPLY


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("gmail-reply", Kind.REPLY),
        ("outlook-reply", Kind.REPLY),
        ("thunderbird-reply", Kind.REPLY),
        ("utf8-subject", Kind.NEW),
        ("no-from", Kind.NEW),
        ("dsn-bounce", Kind.BOUNCE),
        ("ooo-autoreply", Kind.AUTO_REPLY),
        ("exchange-oof", Kind.AUTO_REPLY),
        ("list-mail", Kind.AUTO_REPLY),
        ("forged-mailgate-header", Kind.NEW),  # a loop token that does not verify is not ours
    ],
)
def test_corpus_kinds(name: str, kind: Kind) -> None:
    assert corpus_kind(name) is kind


# --------------------------------------------------------------------------- loops
def test_loop_by_our_signed_loop_header() -> None:
    raw = mail(f"X-Mailgate-Loop: {IDENTITY.loop_value}")
    kind, reason = kind_of(raw)
    assert kind is Kind.LOOP and "X-Mailgate-Loop" in reason


def test_a_loop_header_signed_by_another_installation_is_not_ours() -> None:
    other = Identity(b"another-secret-0123456789abcdef!", "example.com")
    assert kind_of(mail(f"X-Mailgate-Loop: {other.loop_value}"))[0] is Kind.NEW


def test_a_non_ascii_loop_header_is_just_not_ours() -> None:
    raw = mail().replace(b"Subject:", "X-Mailgate-Loop: exämple.com; ü\r\nSubject:".encode(), 1)
    assert kind_of(raw)[0] is Kind.NEW


def test_loop_by_our_own_message_id() -> None:
    own_id = IDENTITY.message_id(42, "pat@customer.example")
    kind, reason = kind_of(mail(f"Message-ID: {own_id}"))
    assert kind is Kind.LOOP and "Message-ID" in reason


@pytest.mark.parametrize(
    "sender",
    [
        "support@example.com",
        "Example Support <SUPPORT@Example.COM>",
        "support+outage@example.com",
        "outage@example.com",
    ],
)
def test_loop_by_our_own_from_address(sender: str) -> None:
    kind, reason = kind_of(mail(sender=sender))
    assert kind is Kind.LOOP and "own address" in reason


def test_a_similar_address_is_not_ours() -> None:
    assert kind_of(mail(sender="support@example.com.evil.example"))[0] is Kind.NEW
    assert kind_of(mail(sender="xsupport@example.com"))[0] is Kind.NEW


# --------------------------------------------------------------------------- bounces
def test_dsn_is_a_bounce_with_its_recipients() -> None:
    result = classify(parse((CORPUS / "dsn-bounce.eml").read_bytes()), envelope(""), IDENTITY, OWN)
    assert result.kind is Kind.BOUNCE  # and not an auto-reply, although it has Auto-Submitted
    assert result.bounced == frozenset({"gone.user@customer.example", "old.boss@customer.example"})
    assert result.automatic


def test_null_envelope_sender_over_smtp_is_a_bounce() -> None:
    for null in ("", "<>"):
        kind, reason = kind_of(mail(), envelope(null, "smtp"))
        assert kind is Kind.BOUNCE and reason == "null envelope sender"
    assert kind_of(mail(), envelope("", "lmtp"))[0] is Kind.BOUNCE


def test_empty_sender_from_a_pipe_is_not_taken_as_null_sender() -> None:
    # `mailgate ingest` often runs without $SENDER; only Return-Path: <> proves a null sender there
    assert kind_of(mail(), envelope("", "pipe"))[0] is Kind.NEW
    assert kind_of(mail("Return-Path: <>"), envelope("", "pipe"))[0] is Kind.BOUNCE


@pytest.mark.parametrize(
    "sender",
    ["MAILER-DAEMON@mx.customer.example", "postmaster@customer.example", "Mail Delivery <mailer-daemon@x.example>"],
)
def test_mailer_daemon_sender_is_a_bounce(sender: str) -> None:
    kind, reason = kind_of(mail(sender=sender))
    assert kind is Kind.BOUNCE and reason.startswith("sent by ")


def test_x_failed_recipients_is_a_bounce() -> None:
    result = classify(
        parse(mail("X-Failed-Recipients: Gone@Customer.example, other@customer.example")), envelope(), IDENTITY, OWN
    )
    assert result.kind is Kind.BOUNCE
    assert result.bounced == frozenset({"gone@customer.example", "other@customer.example"})


# --------------------------------------------------------------------------- auto-replies
@pytest.mark.parametrize("value", ["auto-replied", "auto-generated", "auto-notified", "Auto-Replied (vacation)"])
def test_auto_submitted_other_than_no_is_automatic(value: str) -> None:
    kind, reason = kind_of(mail(f"Auto-Submitted: {value}"))
    assert kind is Kind.AUTO_REPLY and reason.startswith("Auto-Submitted:")


@pytest.mark.parametrize("value", ["no", "No", "no; comment"])
def test_auto_submitted_no_is_a_human(value: str) -> None:
    assert kind_of(mail(f"Auto-Submitted: {value}"))[0] is Kind.NEW


@pytest.mark.parametrize("header", ["X-Autoreply: yes", "X-Autorespond: vacation", "X-Auto-Response-Suppress: All"])
def test_autoreply_headers(header: str) -> None:
    kind, reason = kind_of(mail(header))
    assert kind is Kind.AUTO_REPLY and header.split(":")[0].lower() in reason


@pytest.mark.parametrize("value", ["bulk", "junk", "list", "Bulk"])
def test_precedence_bulk_junk_list(value: str) -> None:
    kind, reason = kind_of(mail(f"Precedence: {value}"))
    assert kind is Kind.AUTO_REPLY and reason == f"Precedence: {value.lower()}"


def test_other_precedence_is_a_human() -> None:
    assert kind_of(mail("Precedence: first-class"))[0] is Kind.NEW


def test_list_id_is_automatic() -> None:
    kind, reason = kind_of(mail("List-Id: Users <users.lists.example.org>"))
    assert kind is Kind.AUTO_REPLY and reason == "mailing-list headers"


@pytest.mark.parametrize(
    "subject",
    [
        "Automatic reply: [#482913] Printer on fire",
        "Out of Office: Printer on fire",
        "Out of the office until Monday",
        "Autoreply: Printer",
        "Abwesenheitsnotiz: Drucker",
        "Automatische Antwort: Drucker",
        "Réponse automatique : Imprimante",
    ],
)
def test_out_of_office_subjects(subject: str) -> None:
    kind, reason = kind_of(mail(subject=subject))
    assert kind is Kind.AUTO_REPLY and reason == "out-of-office subject"


@pytest.mark.parametrize(
    "subject", ["Vacation request for May", "Absence of invoice 2026-031", "Automation of printer reports"]
)
def test_ordinary_subjects_that_look_similar_are_new_tickets(subject: str) -> None:
    assert kind_of(mail(subject=subject))[0] is Kind.NEW


def test_an_auto_reply_to_our_mail_is_still_an_auto_reply() -> None:
    kind, _ = kind_of(mail("Auto-Submitted: auto-replied", "In-Reply-To: <mg.1.aaaaaaaa.bbbbbb.cccccccccccccccc@x>"))
    assert kind is Kind.AUTO_REPLY
