"""Threading: the subject tag (any configured format, anywhere in the subject), then In-Reply-To, then
References (newest first), against tickets created by the real ingest on a real database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from mailgate.clock import FixedClock
from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.domain import Envelope, ThreadMatch
from mailgate.pipeline.ingest import Context, ingest
from mailgate.pipeline.parse import parse
from mailgate.pipeline.thread import TicketTag, match_thread
from mailgate.storage.model import Outbox
from mailgate.storage.store import Store
from tests.conftest import MakeConfig

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


# --------------------------------------------------------------------------- TicketTag (pure)
def test_default_tag_found_anywhere_in_the_subject() -> None:
    tag = TicketTag("######", "[#{number}]")
    assert tag.numbers_in("Re: AW: [EXT] Fwd: foo [#123456] bar") == ["123456"]
    assert tag.numbers_in("[#123456] at the start") == ["123456"]
    assert tag.numbers_in("two: [#123456] and [#654321]") == ["123456", "654321"]
    assert tag.numbers_in("no tag #123456 here, nor [#12345] nor [#1234567]") == []


def test_custom_format_with_letters_and_special_characters() -> None:
    tag = TicketTag("MG-######", "[Support #{number}]")
    assert tag.tag("MG-123456") == "[Support #MG-123456]"
    assert tag.numbers_in("Re: [Support #MG-123456] printer") == ["MG-123456"]
    assert tag.numbers_in("RE: [SUPPORT #mg-123456]") == ["MG-123456"]  # spelled as stored
    assert tag.numbers_in("[Support  #MG-123456]") == ["MG-123456"]  # a client doubled the space
    assert tag.numbers_in("[Support #MGX123456]") == []  # '-' is literal, not a pattern


def test_regex_characters_in_the_tag_are_literal() -> None:
    tag = TicketTag("####", "(Ticket.*{number}+?)")
    assert tag.numbers_in("Re: (Ticket.*4711+?) x") == ["4711"]
    assert tag.numbers_in("Re: (TicketXX4711+?) x") == []
    assert tag.numbers_in("Re: (Ticket.*47111?) x") == []


def test_tag_without_brackets_does_not_read_part_of_a_longer_number() -> None:
    tag = TicketTag("######", "#{number}")
    assert tag.numbers_in("order #1234567 and ticket #123456") == ["123456"]


@pytest.mark.parametrize("fmt", ["######", "MG-######", "####-##"])
def test_new_number_follows_the_format_and_never_starts_with_zero(fmt: str) -> None:
    tag = TicketTag(fmt, "[#{number}]")
    pattern = re.compile("^" + "".join(r"\d" if c == "#" else re.escape(c) for c in fmt) + "$")
    numbers = [tag.new_number() for _ in range(300)]
    for number in numbers:
        assert pattern.match(number), number
        assert number[fmt.index("#")] != "0"
    assert len(set(numbers)) > 250  # random, not a sequence


def test_with_tag_adds_the_tag_once() -> None:
    tag = TicketTag("######", "[#{number}]")
    assert tag.with_tag("Printer on fire", "482913") == "[#482913] Printer on fire"
    assert tag.with_tag("Re: [#482913] Printer on fire", "482913") == "Re: [#482913] Printer on fire"


# --------------------------------------------------------------------------- match_thread (database)
def _env() -> Envelope:
    return Envelope("pat@customer.example", ("support@example.com",), "pipe", datetime(2026, 3, 10, tzinfo=UTC))


def _new_ticket(ctx: Context, message_id: str, subject: str = "Printer on fire") -> str:
    raw = (
        f"From: Pat <pat@customer.example>\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id}\r\nDate: Tue, 10 Mar 2026 09:00:00 +0000\r\n\r\nIt burns.\r\n"
    ).encode()
    outcome = ingest(raw, _env(), ctx)
    assert outcome.status == "accepted" and outcome.number
    return outcome.number


def _match(ctx: Context, raw: bytes) -> tuple[ThreadMatch, str | None]:
    with ctx.db.reader() as session:
        store = Store(session)
        match = match_thread(parse(raw), store, ctx.tag, ctx.identity)
        ticket = store.ticket(match.ticket_id) if match.ticket_id is not None else None
        return match, ticket.number if ticket else None


def _reply(subject: str = "Re: hello", *headers: str) -> bytes:
    lines = ["From: Pat <pat@customer.example>", "To: support@example.com", f"Subject: {subject}", *headers]
    return ("\r\n".join(lines) + "\r\nMessage-ID: <reply-x@customer.example>\r\n\r\nmore\r\n").encode()


def test_match_by_tag_anywhere_in_the_subject(ctx: Context) -> None:
    number = _new_ticket(ctx, "<first@customer.example>")
    raw = (CORPUS / "tag-in-middle.eml").read_bytes().replace(b"[#123456]", f"[#{number}]".encode())
    match, found = _match(ctx, raw)
    assert (match.via, found, match.number) == ("tag", number, number)


def test_tag_wins_over_thread_headers(ctx: Context) -> None:
    first = _new_ticket(ctx, "<a@customer.example>")
    second = _new_ticket(ctx, "<b@customer.example>")
    match, found = _match(ctx, _reply(f"Re: [#{second}] x", "In-Reply-To: <a@customer.example>"))
    assert (match.via, found) == ("tag", second)
    assert first != second


def test_unknown_tag_matches_nothing(ctx: Context) -> None:
    _new_ticket(ctx, "<a@customer.example>")
    match, found = _match(ctx, (CORPUS / "tag-in-middle.eml").read_bytes())  # [#123456] does not exist
    assert match == ThreadMatch(None, "none") and found is None


def test_unknown_tag_falls_back_to_in_reply_to(ctx: Context) -> None:
    number = _new_ticket(ctx, "<a@customer.example>")
    match, found = _match(ctx, _reply("Re: [#999999] x", "In-Reply-To: <a@customer.example>"))
    assert (match.via, found) == ("in_reply_to", number)


def test_match_by_in_reply_to_the_customers_first_mail(ctx: Context) -> None:
    number = _new_ticket(ctx, "<a@customer.example>")
    match, found = _match(ctx, _reply("Re: subject changed", "In-Reply-To: <a@customer.example>"))
    assert (match.via, found) == ("in_reply_to", number)


def test_match_by_in_reply_to_our_acknowledgment(ctx: Context) -> None:
    number = _new_ticket(ctx, "<a@customer.example>")
    with ctx.db.reader() as session:
        ack_id = session.scalars(select(Outbox.message_id).where(Outbox.kind == "ack_new")).one()
    match, found = _match(ctx, _reply("Re: no tag any more", f"In-Reply-To: {ack_id}"))
    assert (match.via, found) == ("in_reply_to", number)


def test_match_by_a_signed_message_id_we_never_stored(ctx: Context) -> None:
    number = _new_ticket(ctx, "<a@customer.example>")
    with ctx.db.reader() as session:
        ticket = Store(session).ticket_by_number(number)
        assert ticket is not None
        signed = ctx.identity.message_id(ticket.id, "pat@customer.example")
    match, found = _match(ctx, _reply("Re: x", f"In-Reply-To: {signed}"))
    assert (match.via, found) == ("in_reply_to", number)


def test_references_are_read_right_to_left(ctx: Context) -> None:
    older = _new_ticket(ctx, "<t1@customer.example>")
    newer = _new_ticket(ctx, "<t2@customer.example>")
    refs = "References: <unknown-0@x.example> <t1@customer.example> <t2@customer.example> <unknown-1@x.example>"
    match, found = _match(ctx, _reply("Re: x", refs))
    assert (match.via, found) == ("references", newer)
    match, found = _match(ctx, _reply("Re: x", "References: <t2@customer.example> <t1@customer.example>"))
    assert (match.via, found) == ("references", older)


def test_unknown_thread_headers_match_nothing(ctx: Context) -> None:
    _new_ticket(ctx, "<a@customer.example>")
    match, _ = _match(ctx, _reply("Re: x", "In-Reply-To: <nope@x.example>", "References: <nope2@x.example>"))
    assert match == ThreadMatch(None, "none")


def test_a_reply_is_appended_to_the_ticket_it_matches(ctx: Context) -> None:
    number = _new_ticket(ctx, "<a@customer.example>")
    outcome = ingest(_reply(f"AW: [EXT] Re: [#{number}] Printer on fire"), _env(), ctx)
    assert (outcome.status, outcome.number) == ("accepted", number)
    with ctx.db.reader() as session:
        assert len(Store(session).tickets()) == 1


@pytest.fixture
def custom_ctx(make_config: MakeConfig) -> Iterator[Context]:
    path = make_config(tickets={"number_format": "MG-######", "subject_tag": "[Support #{number}]"})
    context = build_context(load_config(path), FixedClock())
    context.db.upgrade()
    yield context
    context.db.dispose()


def test_custom_tag_format_end_to_end(custom_ctx: Context) -> None:
    number = _new_ticket(custom_ctx, "<a@customer.example>")
    assert re.fullmatch(r"MG-[1-9]\d{5}", number)
    match, found = _match(custom_ctx, _reply(f"RE: AW: [support #{number.lower()}] x"))
    assert (match.via, found) == ("tag", number)


def test_signed_reply_address_threads_without_tag_or_headers(ctx: Context) -> None:
    number = _new_ticket(ctx, "<tok@customer.example>")
    with ctx.db.reader() as session:
        ticket = Store(session).ticket_by_number(number)
        assert ticket is not None
        reply_to = ctx.identity.plus_address("support@example.com", "t", ticket.id)
    raw = _reply("A completely new subject").replace(b"To: support@example.com", f"To: {reply_to}".encode())
    with ctx.db.reader() as session:
        match = match_thread(parse(raw), Store(session), ctx.tag, ctx.identity)
    assert (match.via, match.number) == ("token", number)
    forged = raw.replace(reply_to.split("+")[1][:1].encode() + reply_to.split("+")[1][1:4].encode(), b"t999")
    with ctx.db.reader() as session:
        assert match_thread(parse(forged), Store(session), ctx.tag, ctx.identity).via == "none"
