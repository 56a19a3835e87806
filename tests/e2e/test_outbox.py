"""Outgoing mail over a real SMTP relay (an aiosmtpd sink on loopback), sent by ``mailgate serve``.

Promises: the acknowledgment reaches the relay with the right envelope and
headers; while the relay is down or answers 4xx the row stays pending with
its attempts and last error and is delivered exactly once when the relay is
back; a 5xx fails the row and records ``notification_failed`` on the ticket,
and ``outbox retry`` re-queues it; restarting ``serve`` never sends a mail
twice, and neither do two daemons sharing one database. The relay refusing
*us* (a wrong password) is our problem, not the customer's: the mail waits.
A customer with an internationalised address is answered over SMTPUTF8, and
a mail the relay cannot take fails alone without holding up the others.
"""

from __future__ import annotations

import email
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    MakeConfig,
    Service,
    SinkMessage,
    SmtpSink,
    cli_json,
    free_port,
    make_mail,
    run_cli,
    smtp_deliver,
    start_service,
    wait_until,
)


@pytest.fixture
def relay_config(make_config: MakeConfig, smtp_sink: SmtpSink) -> Path:
    return make_config(outbound={"transport": "smtp", "smtp": {"host": smtp_sink.host, "port": smtp_sink.port}})


@pytest.fixture
def relayed(relay_config: Path, tmp_path: Path) -> Iterator[Service]:
    svc = start_service(relay_config, tmp_path / "serve.log")
    yield svc
    if svc.proc.poll() is None:
        assert svc.stop() == 0


def new_ticket(svc: Service, n: int, sender: str = "pat@customer.example") -> str:
    raw = make_mail(f"Question {n}", sender=sender, message_id=f"<q{n}@customer.example>")
    code, text = smtp_deliver(svc.host, svc.port, raw, mail_from=sender)
    assert code == 250, text
    return f"<q{n}@customer.example>"


def rows(svc: Service) -> list[dict[str, Any]]:
    """The acknowledgment rows, oldest first (agents' alerts about new tickets go out too; not counted here)."""
    return sorted((r for r in cli_json(svc.config, "outbox", "list") if r["kind"] == "ack_new"), key=lambda r: r["id"])


def wait_rows(svc: Service, what: str, predicate: Any) -> list[dict[str, Any]]:
    return list(wait_until(lambda: (r := rows(svc)) and predicate(r) and r, what=what, log=svc.output))


def to_customers(sink: SmtpSink) -> list[SinkMessage]:
    """What the relay took for customers (addresses @customer.example), in arrival order."""
    return [m for m in list(sink.messages) if all(r.endswith("@customer.example") for r in m.rcpt_tos)]


def wait_customers(sink: SmtpSink, count: int, svc: Service) -> list[SinkMessage]:
    return list(wait_until(lambda: len(m := to_customers(sink)) >= count and m,
                           what=f"{count} mail(s) to customers at the relay", log=svc.output))


def replies_to(sink: SmtpSink) -> list[str]:
    """The customer Message-ID each mail delivered to a customer answers, in arrival order."""
    return [email.message_from_bytes(m.data, policy=policy.default)["In-Reply-To"] for m in to_customers(sink)]


def test_acknowledgment_reaches_the_relay_with_the_right_envelope(relayed: Service, smtp_sink: SmtpSink) -> None:
    mid = new_ticket(relayed, 1)
    [delivered] = wait_customers(smtp_sink, 1, relayed)
    assert delivered.rcpt_tos == ["pat@customer.example"]
    # our bounce address for this very row (VERP), never the customer's
    assert delivered.mail_from.startswith("support+b") and delivered.mail_from.endswith("@example.com")
    ack = email.message_from_bytes(delivered.data, policy=policy.default)
    [ticket] = cli_json(relayed.config, "tickets", "list")
    assert f"[#{ticket['number']}]" in ack["Subject"]
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["In-Reply-To"] == mid
    assert ack["X-Mailgate-Loop"]
    [row] = wait_rows(relayed, "the row marked sent", lambda r: r[0]["status"] == "sent")
    assert row["message_id"] == ack["Message-ID"] and row["attempts"] == 1 and row["last_error"] is None


@pytest.mark.parametrize("trouble", ["answers-451", "not-listening"])
def test_relay_trouble_keeps_the_row_pending_then_delivers_it_exactly_once(
    relay_config: Path, smtp_sink: SmtpSink, tmp_path: Path, trouble: str
) -> None:
    if trouble == "answers-451":
        smtp_sink.answer = "451 4.3.0 greylisted, try later"
    else:
        smtp_sink.stop()
    svc = start_service(relay_config, tmp_path / "serve.log")
    try:
        first = new_ticket(svc, 1)
        [row] = wait_rows(svc, "two failed attempts", lambda r: r[0]["attempts"] >= 2)
        assert row["status"] in ("pending", "sending")
        assert row["last_error"] and ("451" in row["last_error"] or trouble == "not-listening")
        assert smtp_sink.messages == []
        if trouble == "answers-451":
            smtp_sink.answer = None
        else:
            smtp_sink.start()
        wait_customers(smtp_sink, 1, svc)
        wait_rows(svc, "the row marked sent", lambda r: r[0]["status"] == "sent")
        second = new_ticket(svc, 2)  # once this arrives, any second copy of the first would have too
        wait_customers(smtp_sink, 2, svc)
        wait_rows(svc, "both rows sent", lambda r: all(x["status"] == "sent" for x in r))
        assert replies_to(smtp_sink) == [first, second]
    finally:
        assert svc.stop() == 0


def test_permanent_refusal_fails_the_row_records_an_event_and_retry_requeues_it(
    relayed: Service, smtp_sink: SmtpSink
) -> None:
    smtp_sink.answer = "550 5.1.1 <pat@customer.example>: mailbox unavailable"
    first = new_ticket(relayed, 1)
    [row] = wait_rows(relayed, "the row failed", lambda r: r[0]["status"] == "failed")
    assert row["attempts"] == 1 and "550" in row["last_error"]
    [ticket] = cli_json(relayed.config, "tickets", "list")
    shown = run_cli(relayed.config, "tickets", "show", ticket["number"])
    assert "notification_failed" in shown.stdout, shown.stdout
    assert smtp_sink.messages == []

    smtp_sink.answer = None  # the admin fixed the address, then re-queues the mail
    retry = run_cli(relayed.config, "outbox", "retry", str(row["id"]))
    assert retry.code == 0 and "1 message" in retry.stdout
    wait_customers(smtp_sink, 1, relayed)
    wait_rows(relayed, "the row sent after retry", lambda r: r[0]["status"] == "sent")
    second = new_ticket(relayed, 2)
    wait_customers(smtp_sink, 2, relayed)
    assert replies_to(smtp_sink) == [first, second]


def test_restarting_serve_does_not_send_twice(relay_config: Path, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    svc = start_service(relay_config, tmp_path / "serve.log")
    try:
        first = new_ticket(svc, 1)
        wait_customers(smtp_sink, 1, svc)
        wait_rows(svc, "the row marked sent", lambda r: r[0]["status"] == "sent")
        smtp_sink.answer = "451 4.3.0 try later"  # the second ack is still pending when serve stops
        second = new_ticket(svc, 2)
        wait_rows(svc, "a failed attempt", lambda r: len(r) == 2 and r[1]["attempts"] >= 1)
    finally:
        assert svc.stop() == 0

    smtp_sink.answer = None
    svc = start_service(relay_config, tmp_path / "serve.log")
    try:
        wait_customers(smtp_sink, 2, svc)
        third = new_ticket(svc, 3)
        wait_customers(smtp_sink, 3, svc)
        wait_rows(svc, "all rows sent", lambda r: len(r) == 3 and all(x["status"] == "sent" for x in r))
        assert replies_to(smtp_sink) == [first, second, third]
    finally:
        assert svc.stop() == 0


class AuthSink(SmtpSink):
    """A relay that wants ``mailgate`` / ``right-password`` before it takes mail."""

    def start(self) -> AuthSink:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mailgate", b"right-password")
            return AuthResult(success=ok, handled=False)

        self._controller = Controller(self, hostname=self.host, port=self.port, authenticator=authenticator,
                                      auth_require_tls=False)
        self._controller.start()
        return self


def test_a_wrong_relay_password_keeps_mail_pending_until_it_is_fixed(make_config: MakeConfig, tmp_path: Path) -> None:
    """Our own login trouble is not the recipient's fault: retry, never mark the customer's mail failed."""
    secret = tmp_path / "relay.secret"
    secret.write_text("wrong-password\n")
    sink = AuthSink().start()
    config = make_config(outbound={"transport": "smtp", "smtp": {
        "host": sink.host, "port": sink.port, "username": "mailgate", "password_file": str(secret)}})
    svc = start_service(config, tmp_path / "serve.log")
    try:
        first = new_ticket(svc, 1)
        [row] = wait_rows(svc, "two failed logins", lambda r: r[0]["attempts"] >= 2)
        assert row["status"] in ("pending", "sending") and "535" in row["last_error"]
        [ticket] = cli_json(config, "tickets", "list")
        assert "notification_failed" not in run_cli(config, "tickets", "show", ticket["number"]).stdout
        secret.write_text("right-password\n")  # the admin fixes the secret; no restart needed
        wait_customers(sink, 1, svc)
        wait_rows(svc, "the row marked sent", lambda r: r[0]["status"] == "sent")
        assert replies_to(sink) == [first]
    finally:
        assert svc.stop() == 0
        sink.stop()


class AsciiSink(SmtpSink):
    """A relay without SMTPUTF8 (RFC 6531): it cannot take mail for an internationalised address."""

    def start(self) -> AsciiSink:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname=self.host, port=self.port, enable_SMTPUTF8=False)
        self._controller.start()
        return self


def _eai_mail() -> bytes:
    return ("From: José <josé@customer.example>\r\nTo: support@example.com\r\nSubject: Grüße\r\n"
            "Message-ID: <eai@customer.example>\r\n\r\nHallo!\r\n").encode()


def _send_eai(svc: Service) -> None:
    with svc.smtp() as client:
        client.ehlo("client.example")
        assert client.sendmail("josé@customer.example", ["support@example.com"], _eai_mail(),
                               mail_options=["SMTPUTF8"]) == {}


def test_customer_with_an_internationalised_address_gets_the_ack_via_smtputf8(
    relayed: Service, smtp_sink: SmtpSink
) -> None:
    _send_eai(relayed)
    [delivered] = wait_customers(smtp_sink, 1, relayed)
    assert [r.encode("utf-8", "surrogateescape").decode() for r in delivered.rcpt_tos] == ["josé@customer.example"]
    ack = email.message_from_string(delivered.data.decode("utf-8"), policy=policy.default)  # RFC 6532 headers
    assert ack["To"].addresses[0].addr_spec == "josé@customer.example"
    assert ack["In-Reply-To"] == "<eai@customer.example>"


def test_a_mail_the_relay_cannot_take_fails_alone_and_blocks_nothing(make_config: MakeConfig, tmp_path: Path) -> None:
    """This relay has no SMTPUTF8: that one ack fails with a reason; the others still go out."""
    sink = AsciiSink().start()
    config = make_config(outbound={"transport": "smtp", "smtp": {"host": sink.host, "port": sink.port}})
    svc = start_service(config, tmp_path / "serve.log")
    try:
        _send_eai(svc)
        second = new_ticket(svc, 2)
        wait_customers(sink, 1, svc)
        done = wait_rows(svc, "both rows settled",
                         lambda r: len(r) == 2 and {x["status"] for x in r} <= {"sent", "failed"})
        by_to = {row["to"][0]: row for row in done}
        assert by_to["pat@customer.example"]["status"] == "sent"
        assert by_to["josé@customer.example"]["status"] == "failed"
        assert "SMTPUTF8" in by_to["josé@customer.example"]["last_error"]
        assert replies_to(sink) == [second]
    finally:
        assert svc.stop() == 0
        sink.stop()


def test_two_daemons_on_one_database_send_each_ack_exactly_once(
    relay_config: Path, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """High availability: two ``serve`` processes share the database; claims keep them from sending twice."""
    import shutil

    import yaml

    twin = tmp_path / "config-twin"
    shutil.copytree(relay_config.parent, twin)
    settings = yaml.safe_load((twin / "mailgate.yaml").read_text())
    settings["intake"]["smtp"]["listen"] = f"127.0.0.1:{free_port()}"
    (twin / "mailgate.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    first = start_service(relay_config, tmp_path / "serve-1.log")
    try:
        second = start_service(twin / "mailgate.yaml", tmp_path / "serve-2.log")
        try:
            # thirty customers (one each: the flood guard limits automatic mail per recipient)
            sent = [new_ticket(first if n % 2 else second, n, f"user{n}@customer.example") for n in range(30)]
            wait_customers(smtp_sink, 30, first)
            wait_rows(first, "all acks sent", lambda r: len(r) == 30 and all(x["status"] == "sent" for x in r))
            marker = new_ticket(first, 99)  # once this one arrives, any duplicate of the others would have too
            wait_customers(smtp_sink, 31, first)
        finally:
            assert second.stop() == 0
    finally:
        assert first.stop() == 0
    delivered = replies_to(smtp_sink)
    assert sorted(delivered) == sorted([*sent, marker])  # every ack once, none twice
