"""LMTP intake (``intake.smtp.lmtp: true``), as Postfix or Dovecot's LMTP client would use it.

Promises: the listener speaks LHLO; after DATA it answers once per accepted
recipient (RFC 2033 §4.2), so the MTA knows the fate of every recipient;
unknown recipients are refused at RCPT and get no DATA answer; one mail to
two support addresses is one ticket; and Python's ``smtplib.LMTP`` delivers
a mail that becomes a ticket with its acknowledgment. Refusals after DATA
(temporary trouble, a mail too big) are per recipient too, so the client
never loses step.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    PATIENCE,
    DatabaseLocked,
    MakeConfig,
    Service,
    cli_json,
    make_mail,
    start_service,
    wait_for_outgoing,
)


@pytest.fixture
def lmtp_service(make_config: MakeConfig, tmp_path: Path) -> Iterator[Service]:
    svc = start_service(make_config(intake={"smtp": {"lmtp": True}}), tmp_path / "serve.log")
    yield svc
    if svc.proc.poll() is None:
        assert svc.stop() == 0


class Conversation:
    """A raw LMTP session, so the test sees every reply line exactly as the server sent it."""

    def __init__(self, host: str, port: int, timeout: float = PATIENCE) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def reply(self) -> tuple[int, list[str]]:
        """One (possibly multi-line) reply: its code and its lines."""
        lines = []
        while True:
            line = self.file.readline().decode().rstrip("\r\n")
            assert line, "server closed the connection"
            lines.append(line)
            if line[3:4] != "-":
                return int(line[:3]), lines

    def command(self, text: str) -> tuple[int, list[str]]:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_lhlo_and_one_status_line_per_recipient(lmtp_service: Service) -> None:
    lmtp = Conversation(lmtp_service.host, lmtp_service.port)
    try:
        assert lmtp.reply()[0] == 220
        code, lines = lmtp.command("LHLO mx.example.com")
        assert code == 250 and any("PIPELINING" in line or "8BITMIME" in line for line in lines)
        assert lmtp.command("MAIL FROM:<pat@customer.example>")[0] == 250
        assert lmtp.command("RCPT TO:<support@example.com>")[0] == 250
        code, lines = lmtp.command("RCPT TO:<stranger@elsewhere.example>")
        assert code == 550 and lines[0].startswith("550 5.1.1")
        assert lmtp.command("RCPT TO:<outage@example.com>")[0] == 250
        assert lmtp.command("DATA")[0] == 354
        raw = make_mail(to="support@example.com, outage@example.com", message_id="<lmtp-1@customer.example>")
        lmtp.sock.sendall(raw + b".\r\n")
        statuses = [lmtp.reply() for _ in range(2)]  # one per accepted recipient, none for the refused one
        assert [code for code, _ in statuses] == [250, 250], statuses
        code, lines = lmtp.command("QUIT")  # a third status line would show up here instead of 221
        assert code == 221, lines
    finally:
        lmtp.close()
    assert len(cli_json(lmtp_service.config, "tickets", "list")) == 1  # two recipients, one mail, one ticket


def test_smtplib_lmtp_client_delivers_a_mail_that_becomes_a_ticket(lmtp_service: Service) -> None:
    with smtplib.LMTP(lmtp_service.host, lmtp_service.port, timeout=PATIENCE) as client:
        code, _ = client.ehlo("mx.example.com")  # smtplib sends LHLO for LMTP
        assert code == 250
        refused = client.sendmail("pat@customer.example", ["support@example.com"],
                                  make_mail(message_id="<lmtp-2@customer.example>"))
        assert refused == {}
    [ticket] = cli_json(lmtp_service.config, "tickets", "list")
    [ack] = wait_for_outgoing(lmtp_service.config, 1, lmtp_service)
    assert f"[#{ticket['number']}]" in ack["Subject"]
    assert ack["In-Reply-To"] == "<lmtp-2@customer.example>"


def test_lmtp_listener_does_not_speak_smtp_ehlo(lmtp_service: Service) -> None:
    with smtplib.SMTP(lmtp_service.host, lmtp_service.port, timeout=PATIENCE) as client:
        code, _ = client.ehlo("mx.example.com")
        assert code >= 500  # LMTP must not be mistaken for an SMTP server on a public port


def _two_recipient_transaction(svc: Service, raw: bytes, timeout: float = PATIENCE) -> list[tuple[int, list[str]]]:
    """MAIL, two RCPTs, DATA: return the replies that follow the final dot (one per recipient expected)."""
    lmtp = Conversation(svc.host, svc.port, timeout)
    try:
        assert lmtp.reply()[0] == 220
        assert lmtp.command("LHLO mx.example.com")[0] == 250
        assert lmtp.command("MAIL FROM:<pat@customer.example>")[0] == 250
        assert lmtp.command("RCPT TO:<support@example.com>")[0] == 250
        assert lmtp.command("RCPT TO:<outage@example.com>")[0] == 250
        assert lmtp.command("DATA")[0] == 354
        lmtp.sock.sendall(raw + b".\r\n")
        statuses = [lmtp.reply(), lmtp.reply()]
        code, lines = lmtp.command("NOOP")  # still in step: the next reply answers the next command
        assert code == 250, lines
        return statuses
    finally:
        lmtp.close()


def test_oversize_mail_is_refused_once_per_recipient(make_config: MakeConfig, tmp_path: Path) -> None:
    svc = start_service(make_config(intake={"smtp": {"lmtp": True, "max_message_size": "4KiB"}}),
                        tmp_path / "serve.log")
    try:  # a short socket timeout: a missing second reply must fail the test, not hang it
        statuses = _two_recipient_transaction(svc, make_mail(body="x" * 70 + ("\r\n" + "y" * 70) * 100), timeout=5)
        assert [code for code, _ in statuses] == [552, 552], statuses
    finally:
        assert svc.stop() == 0


def test_temporary_failure_is_answered_once_per_recipient(lmtp_service: Service) -> None:
    with DatabaseLocked(lmtp_service.config):
        statuses = _two_recipient_transaction(lmtp_service, make_mail(message_id="<lmtp-451@customer.example>"))
    assert [code for code, _ in statuses] == [451, 451], statuses
    assert cli_json(lmtp_service.config, "tickets", "list") == []
