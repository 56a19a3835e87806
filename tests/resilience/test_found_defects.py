"""Each promise that broke when mailgate was tried as a hostile sender would try it, reproduced as found.

One test (or a few) per defect, named by its number in the step-7 list, driven through the
real pipeline on a real database, and through the real CLI where the defect showed there.
Each of these failed before its fix. Runs in about half a minute.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailgate.clock import FixedClock
from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.domain import Envelope
from mailgate.errors import Rejected
from mailgate.pipeline.ingest import Context, ingest
from mailgate.storage.model import Event, Inbound, Message, Outbox, Participant, Suppression, Ticket
from tests.conftest import MakeConfig, run_cli

CUSTOMER = "ann@customer.example"
COLLEAGUE = "bob@customer.example"
AGENT = "jane@example.com"  # member of the Support department that the General topic routes to


@pytest.fixture
def context_with(make_config: MakeConfig, clock: FixedClock) -> Iterator[Callable[..., Context]]:
    """A Context on a fresh database for a config with the given mailgate.yaml overrides."""
    made: list[Context] = []

    def build(**main: Any) -> Context:
        context = build_context(load_config(make_config(**main)), clock)
        context.db.upgrade()
        made.append(context)
        return context

    yield build
    for context in made:
        context.db.dispose()


def env(clock: FixedClock, mail_from: str = CUSTOMER, rcpt: str = "support@example.com") -> Envelope:
    return Envelope(mail_from, (rcpt,), "smtp", clock.now())


def mail(subject: str, *, sender: str = CUSTOMER, body: str = "Hello.", headers: dict[str, str] | None = None,
         to: str = "support@example.com") -> bytes:
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def rows(ctx: Context, query: Any) -> list[Any]:
    with ctx.db.reader() as session:
        return list(session.execute(query).all())


def ack_of(ctx: Context, number: str) -> Outbox:
    with ctx.db.reader() as session:
        ticket_id = session.scalar(select(Ticket.id).where(Ticket.number == number))
        return session.scalars(select(Outbox).where(Outbox.ticket_id == ticket_id, Outbox.kind == "ack_new")).one()


# ----------------------------------------------------------------------------------------------- 1
def test_1_collaborator_answering_the_signed_reply_address_joins_the_ticket(ctx: Context, clock: FixedClock) -> None:
    first = ingest(mail("Printer", headers={"Cc": f"Bob <{COLLEAGUE}>"}), env(clock), ctx)
    token_address = ack_of(ctx, first.number or "").headers["Reply-To"]
    assert "+t" in token_address
    reply = mail(f"Re: [#{first.number}] Printer", sender=COLLEAGUE, to=token_address, body="It is on fire now.")
    outcome = ingest(reply, env(clock, COLLEAGUE, token_address), ctx)
    assert outcome.status == "accepted" and outcome.number == first.number
    messages = rows(ctx, select(Message.kind, Message.from_email, Message.body).order_by(Message.id))
    assert [(k, f) for k, f, _ in messages] == [("customer", CUSTOMER), ("customer", COLLEAGUE)]
    people = rows(ctx, select(Participant.email, Participant.role).order_by(Participant.id))
    assert people == [(CUSTOMER, "requester"), (COLLEAGUE, "collaborator")]
    alerts = rows(ctx, select(Outbox.recipient).where(Outbox.kind == "alert_message"))
    assert alerts == [(AGENT,)]


def test_1_adding_a_participant_twice_is_a_no_op(ctx: Context, clock: FixedClock) -> None:
    """The same address as To, Cc and Reply-To of a new ticket, and again by the collaborator policy."""
    raw = mail("Twice", headers={"Cc": f"{COLLEAGUE}, Bob <{COLLEAGUE}>", "Reply-To": COLLEAGUE},
               to=f"support@example.com, {COLLEAGUE}")
    assert ingest(raw, env(clock), ctx).status == "accepted"
    assert rows(ctx, select(Participant.email).where(Participant.email == COLLEAGUE)) == [(COLLEAGUE,)]


# ----------------------------------------------------------------------------------------------- 2
def _forged_dsn(number: str, *failed: str) -> bytes:
    blocks = "".join(f"Final-Recipient: rfc822; {a}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n" for a in failed)
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@evil.example>\r\nTo: support@example.com\r\n"
        f"Subject: Re: [#{number}] Undelivered\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n\r\n'
        "--R\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        f"--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; evil.example\r\n\r\n{blocks}"
        "--R--\r\n"
    ).encode()


@pytest.mark.parametrize("form", ["x-failed-recipients", "multipart-report"])
def test_2_forged_bounce_silences_nobody(ctx: Context, clock: FixedClock, form: str) -> None:
    own = ingest(mail("My own ticket", sender="eve@evil.example"), env(clock, "eve@evil.example"), ctx)
    victim = "victim@elsewhere.example"
    if form == "x-failed-recipients":
        forged = mail(f"Re: [#{own.number}] bounce", sender="eve@evil.example",
                      headers={"X-Failed-Recipients": f"{AGENT}, {victim}"})
    else:
        forged = _forged_dsn(own.number or "", AGENT, victim)
    outcome = ingest(forged, env(clock, ""), ctx)
    assert outcome.status == "quarantined" and "does not prove" in (outcome.reason or "")
    assert rows(ctx, select(Suppression.address)) == []
    ingest(mail("Victim asks", sender=victim), env(clock, victim), ctx)
    kinds = {(k, r) for k, r in rows(ctx, select(Outbox.kind, Outbox.recipient))}
    assert ("ack_new", victim) in kinds and ("alert_new", AGENT) in kinds


def test_2_genuine_bounce_suppresses_its_own_recipient_and_never_an_agent(ctx: Context, clock: FixedClock) -> None:
    first = ingest(mail("Mine"), env(clock), ctx)
    ack = ack_of(ctx, first.number or "")
    verp = ctx.identity.plus_address("support@example.com", "b", ack.id)
    dsn = _forged_dsn(first.number or "", CUSTOMER, AGENT, "victim@elsewhere.example")
    outcome = ingest(dsn, env(clock, "", verp), ctx)
    assert outcome.status == "accepted" and outcome.number == first.number
    assert rows(ctx, select(Suppression.address)) == [(CUSTOMER,)]
    kinds = [k for (k,) in rows(ctx, select(Message.kind).order_by(Message.id))]
    assert kinds == ["customer", "system"]


# ----------------------------------------------------------------------------------------------- 3
ROBOT_HEADERS = [
    {"Auto-Submitted": "auto-replied"},
    {"X-Autoreply": "yes"},
    {"Precedence": "bulk"},
    {"X-Failed-Recipients": "ann@customer.example"},
]


@pytest.mark.parametrize("robot", [{}, *ROBOT_HEADERS], ids=["human", *(next(iter(h)) for h in ROBOT_HEADERS)])
def test_3_robot_headers_do_not_let_a_stranger_in(context_with: Callable[..., Context], clock: FixedClock,
                                                   robot: dict[str, str]) -> None:
    ctx = context_with(security={"stranger_reply": "reject"})
    first = ingest(mail("Private", headers={"Message-ID": "<c1@customer.example>"}), env(clock), ctx)
    eve = mail("Re: Private", sender="eve@evil.example", body="Send the refund to my account instead.",
               headers={"In-Reply-To": "<c1@customer.example>", **robot})
    if "X-Failed-Recipients" in robot:  # a bounce that proves nothing is kept aside, never on a ticket
        assert ingest(eve, env(clock, "eve@evil.example"), ctx).status == "quarantined"
    else:
        with pytest.raises(Rejected):
            ingest(eve, env(clock, "eve@evil.example"), ctx)
    bodies = [b for (b,) in rows(ctx, select(Message.body))]
    assert not any("refund" in b for b in bodies)
    assert first.status == "accepted"


def test_3_pipe_exit_65_for_a_stranger_with_robot_headers(make_config: MakeConfig) -> None:
    config = make_config(security={"stranger_reply": "reject"})
    assert run_cli(config, "ingest", stdin=mail("Private", headers={"Message-ID": "<c2@customer.example>"})).code == 0
    eve = mail("Re: Private", sender="eve@evil.example", headers={"In-Reply-To": "<c2@customer.example>",
                                                                     "Auto-Submitted": "auto-replied"})
    result = run_cli(config, "ingest", stdin=eve)
    assert result.code == 65, result.stderr
    assert "not a participant" in result.stderr


def test_3_new_ticket_policy_keeps_robot_strangers_off_the_named_ticket(ctx: Context, clock: FixedClock) -> None:
    first = ingest(mail("Private", headers={"Message-ID": "<c3@customer.example>"}), env(clock), ctx)
    eve = mail("Re: Private", sender="eve@evil.example", body="robot words",
               headers={"In-Reply-To": "<c3@customer.example>", "Auto-Submitted": "auto-replied"})
    outcome = ingest(eve, env(clock, "eve@evil.example"), ctx)
    assert outcome.status == "accepted" and outcome.number != first.number
    with ctx.db.reader() as session:
        original = session.scalar(select(Ticket.id).where(Ticket.number == first.number))
        assert session.scalars(select(Message.from_email).where(Message.ticket_id == original)).all() == [CUSTOMER]
        assert session.scalars(select(Outbox.id).where(Outbox.recipient == "eve@evil.example")).all() == []


def test_3_machine_mail_quoting_our_signed_id_is_recorded_as_system(ctx: Context, clock: FixedClock) -> None:
    """An out-of-office from a forwarding address answering our ack: proof by signature, not by header."""
    first = ingest(mail("Help"), env(clock), ctx)
    ack = ack_of(ctx, first.number or "")
    ooo = mail("Automatic reply: your ticket", sender="ann.home@elsewhere.example", body="I am away.",
               headers={"In-Reply-To": ack.message_id, "Auto-Submitted": "auto-replied"})
    outcome = ingest(ooo, env(clock, "ann.home@elsewhere.example"), ctx)
    assert outcome.status == "accepted" and outcome.number == first.number
    kinds = [k for (k,) in rows(ctx, select(Message.kind).order_by(Message.id))]
    assert kinds == ["customer", "system"]
    assert rows(ctx, select(Outbox.id).where(Outbox.kind == "alert_message")) == []


# ----------------------------------------------------------------------------------------------- 7
BOUNCE_WITHOUT_MARKS = (
    b"From: Relay <relay@mx.customer.example>\r\nTo: support@example.com\r\nSubject: Delivery failure\r\n\r\n"
    b"The message you sent could not be delivered.\r\n"
)


def test_7_pipe_null_sender_is_a_bounce(config_path: Path) -> None:
    result = run_cli(config_path, "ingest", stdin=BOUNCE_WITHOUT_MARKS, env={"SENDER": ""})
    assert result.code == 0, result.stderr
    from tests.conftest import sql_rows

    assert sql_rows(config_path, "SELECT count(*) FROM ticket") == [(0,)]
    assert sql_rows(config_path, "SELECT count(*) FROM outbox") == [(0,)]
    [(status, reason)] = sql_rows(config_path, "SELECT status, reason FROM inbound")
    assert status == "quarantined" and "null envelope sender" in reason


def test_7_pipe_without_sender_variable_is_not_a_bounce(config_path: Path) -> None:
    import os

    environment = {k: v for k, v in os.environ.items() if k != "SENDER"}
    result = run_cli(config_path, "ingest", stdin=BOUNCE_WITHOUT_MARKS, env=environment)
    assert result.code == 0, result.stderr
    from tests.conftest import sql_rows

    assert sql_rows(config_path, "SELECT count(*) FROM ticket") == [(1,)]


# ----------------------------------------------------------------------------------------------- 8
def _body_in(charset: str, payload: bytes) -> bytes:
    return (
        f'From: {CUSTOMER}\r\nTo: support@example.com\r\nSubject: charset\r\n'
        f'Content-Type: text/plain; charset="{charset}"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
    ).encode("latin-1") + payload + b"\r\n"


@pytest.mark.parametrize(
    ("charset", "payload", "expected"),
    [
        ("idna", "Grüße aus München".encode(), "M"),
        ("utf\x00-8", "naïve café".encode(), "café"),
        ("x-no-such-charset", "naïve café".encode(), "café"),
        ("gb2312", "测试邮件正文碁".encode("gbk"), "测试邮件正文碁"),
    ],
    ids=["idna", "nul-in-label", "unknown", "gb2312-holding-gbk"],
)
def test_8_charsets_fall_back_per_part(ctx: Context, clock: FixedClock, charset: str, payload: bytes,
                                        expected: str) -> None:
    outcome = ingest(_body_in(charset, payload), env(clock), ctx)
    assert outcome.status == "accepted", outcome.reason
    [(body,)] = rows(ctx, select(Message.body))
    assert expected in body


def test_8_gb2312_subject_holding_gbk_bytes_is_decoded(ctx: Context, clock: FixedClock) -> None:
    words = base64.b64encode("关于碁的问题".encode("gbk")).decode()
    raw = f"From: {CUSTOMER}\r\nTo: support@example.com\r\nSubject: =?gb2312?B?{words}?=\r\n\r\nhi\r\n".encode()
    outcome = ingest(raw, env(clock), ctx)
    assert outcome.status == "accepted"
    assert rows(ctx, select(Ticket.subject)) == [("关于碁的问题",)]


@pytest.mark.parametrize(
    ("headers", "mail_from", "requester"),
    [
        ("Sender: Sam <sam@customer.example>\r\n", "relay@customer.example", "sam@customer.example"),
        ("Reply-To: rita@customer.example\r\n", "relay@customer.example", "rita@customer.example"),
        ("", "env@customer.example", "env@customer.example"),
    ],
    ids=["sender", "reply-to", "envelope"],
)
def test_8_no_from_uses_the_next_address_that_names_the_sender(ctx: Context, clock: FixedClock, headers: str,
                                                                 mail_from: str, requester: str) -> None:
    raw = f"To: support@example.com\r\nSubject: anonymous?\r\n{headers}\r\nhello\r\n".encode()
    outcome = ingest(raw, env(clock, mail_from), ctx)
    assert outcome.status == "accepted"
    assert rows(ctx, select(Ticket.requester_email)) == [(requester,)]
    assert rows(ctx, select(Outbox.recipient).where(Outbox.kind == "ack_new")) == [(requester,)]


def test_8_no_sender_at_all_is_quarantined_with_the_reason(ctx: Context, clock: FixedClock) -> None:
    raw = b"To: support@example.com\r\nSubject: from nobody\r\n\r\nhello\r\n"
    outcome = ingest(raw, Envelope("", ("support@example.com",), "pipe", clock.now()), ctx)  # sender unknown
    assert outcome.status == "quarantined" and "no sender" in (outcome.reason or "")
    assert rows(ctx, select(Ticket.id)) == []
    assert rows(ctx, select(Inbound.status)) == [("quarantined",)]


# ----------------------------------------------------------------------------------------------- 10
def test_10_ack_goes_to_from_and_reply_to_only_collaborates(ctx: Context, clock: FixedClock) -> None:
    third = "target@elsewhere.example"
    outcome = ingest(mail("Buy cheap pills at evil.example", headers={"Reply-To": third}), env(clock), ctx)
    assert outcome.status == "accepted"
    assert rows(ctx, select(Outbox.recipient).where(Outbox.kind == "ack_new")) == [(CUSTOMER,)]
    people = rows(ctx, select(Participant.email, Participant.role).order_by(Participant.id))
    assert people == [(CUSTOMER, "requester"), (third, "collaborator")]
    events = [d for (d,) in rows(ctx, select(Event.detail).where(Event.kind == "notification_held"))]
    assert not any(third in d for d in events)


def test_10_reply_to_as_requester_when_configured(context_with: Callable[..., Context], clock: FixedClock) -> None:
    ctx = context_with(security={"reply_to": "requester"})
    raw = mail("Contact form", sender="noreply@forms.example", headers={"Reply-To": "kim@customer.example"})
    assert ingest(raw, env(clock, "noreply@forms.example"), ctx).status == "accepted"
    assert rows(ctx, select(Ticket.requester_email)) == [("kim@customer.example",)]
    assert rows(ctx, select(Outbox.recipient).where(Outbox.kind == "ack_new")) == [("kim@customer.example",)]
