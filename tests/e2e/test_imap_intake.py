"""IMAP intake against a real private Dovecot and the real ``mailgate serve`` process.

Each test gets fresh Dovecot users (empty mailboxes). Mail goes in by IMAP
APPEND, exactly as an MTA's local delivery would leave it; what came out is
read back from the database, the outgoing Maildir and the IMAP folders.
Deadlines are generous and never asserted as latencies.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from imapclient import DELETED, SEEN
from imapclient.exceptions import LoginError
from sqlalchemy import select

from mailgate.config import load_config
from mailgate.intake.imap_session import finish_messages
from mailgate.storage.db import Database
from mailgate.storage.model import Inbound, MailboxState, Message, Outbox, Ticket
from tests.conftest import PATIENCE, PG_URL, MakeConfig, Service, run_cli, start_service
from tests.support.dovecot_fixture import DovecotServer

DEADLINE = 30.0
T = TypeVar("T")


def mail(
    subject: str,
    mid: str,
    *,
    sender: str = "Pat <pat@customer.example>",
    body: str = "Hello there.",
    headers: str = "",
    to: str = "support@example.com",
) -> bytes:
    return (f"{headers}From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n"
            f"Date: Mon, 05 Jan 2026 09:00:00 +0000\r\n\r\n{body}\r\n").encode()  # fmt: skip


def wait_until(check: Callable[[], Any], what: str, run: Run | None = None, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            log = run.output()[-4000:] if run else ""
            raise AssertionError(f"timed out waiting for {what}\n--- mailgate serve log ---\n{log}")
        time.sleep(0.1)


def at_least(fetch: Callable[[], list[T]], n: int, what: str, run: Run, timeout: float = DEADLINE) -> list[T]:
    def check() -> list[T] | None:
        items = fetch()
        return items if len(items) >= n else None

    return wait_until(check, what, run, timeout)  # type: ignore[no-any-return]


def mailbox(dovecot: DovecotServer, user: str, password: str, name: str = "support", **extra: Any) -> dict[str, Any]:
    return {"name": name, "host": dovecot.host, "port": dovecot.imap_port, "security": "plain",
            "username": user, "password": password, "processed_folder": "Processed",
            "poll_interval": "1h", **extra}  # fmt: skip


def count(dovecot: DovecotServer, user: str, folder: str) -> int:
    with dovecot.imap(user) as client:
        if not client.folder_exists(folder):
            return 0
        return int(client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])


def append(dovecot: DovecotServer, user: str, *messages: bytes, folder: str = "INBOX") -> None:
    with dovecot.imap(user) as client:
        for raw in messages:
            client.append(folder, raw)


@dataclass
class Run:
    """One ``mailgate serve`` on one config, and read access to its database."""

    config: Path
    log: Path
    db: Database
    service: Service | None = None
    services: list[Service] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> Run:
        self.service = start_service(self.config, self.log, env=self.env)
        self.services.append(self.service)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tickets(self) -> list[Ticket]:
        with self.db.reader() as session:
            return list(session.scalars(select(Ticket).order_by(Ticket.id)))

    def messages(self, ticket: Ticket) -> list[Message]:
        with self.db.reader() as session:
            return list(session.scalars(select(Message).where(Message.ticket_id == ticket.id)))

    def inbound(self) -> list[Inbound]:
        with self.db.reader() as session:
            return list(session.scalars(select(Inbound).order_by(Inbound.id)))

    def outbox(self, kind: str) -> list[Outbox]:
        with self.db.reader() as session:
            return list(session.scalars(select(Outbox).where(Outbox.kind == kind)))

    def state(self, name: str) -> MailboxState | None:
        with self.db.reader() as session:
            return session.get(MailboxState, name)

    def wait_tickets(self, n: int) -> list[Ticket]:
        return at_least(self.tickets, n, f"{n} ticket(s)", self)


@pytest.fixture
def imap_config(make_config: MakeConfig) -> Callable[..., Path]:
    def make(mailboxes: list[dict[str, Any]], **main: Any) -> Path:
        return make_config(intake={"imap": mailboxes}, **main)

    return make


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def start(config: Path, *, env: dict[str, str] | None = None) -> Run:
        run = Run(config, tmp_path / "serve.log", Database(load_config(config).database_url), env=env or {})
        runs.append(run)
        return run.start()

    yield start
    for run in runs:
        for svc in run.services:
            if svc.proc.poll() is None:
                svc.stop(signal.SIGKILL)
        run.db.dispose()


# --------------------------------------------------------------------------------------------- the stories
def test_new_mail_then_reply_under_idle_then_clean_shutdown(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run], tmp_path: Path
) -> None:
    user, pw = dovecot.add_user()
    append(
        dovecot,
        user,
        mail(
            "Printer on fire",
            "first@customer.example",
            headers=("Return-Path: <pat@customer.example>\r\nDelivered-To: support@example.com\r\n"),
        ),
    )
    run = serve(imap_config([mailbox(dovecot, user, pw, help_topic="General")]))
    [ticket] = run.wait_tickets(1)
    assert ticket.help_topic == "General"
    wait_until(lambda: count(dovecot, user, "Processed") == 1, "the mail moved to Processed", run)
    assert count(dovecot, user, "INBOX") == 0
    [row] = run.inbound()
    assert (row.source, row.mailbox, row.mail_from, row.rcpt_tos) == (
        "imap",
        "support",
        "pat@customer.example",
        ["support@example.com"],
    )
    outgoing = tmp_path / "outgoing" / "new"
    wait_until(lambda: outgoing.exists() and any(outgoing.iterdir()), "the acknowledgment", run)

    time.sleep(0.5)  # the poller is idling now (poll_interval is 1 h: only IDLE can bring the reply in time)
    append(
        dovecot,
        user,
        mail(
            f"Re: [#{ticket.number}] Printer on fire",
            "reply@customer.example",
            headers="In-Reply-To: <first@customer.example>\r\n",
        ),
    )
    wait_until(lambda: len(run.messages(ticket)) == 2, "the reply on the same ticket", run)
    assert len(run.tickets()) == 1
    wait_until(lambda: count(dovecot, user, "Processed") == 2, "the reply moved to Processed", run)
    state = run.state("support")
    assert state is not None and state.uidvalidity and state.last_uid == 2 and state.last_error is None

    assert run.service is not None
    assert run.service.stop(signal.SIGTERM, timeout=PATIENCE) == 0

    def sessions() -> tuple[int, list[str]]:
        text = dovecot.log_path.read_text()
        logins = len(re.findall(rf"Login: user=<{user}>", text))
        return logins, re.findall(rf"imap\({user}\)<[^>]*><[^>]*>: Info: Disconnected: (\w+ \w+)", text)

    wait_until(lambda: sessions()[0] == len(sessions()[1]), "Dovecot logging every session's end", run)
    assert set(sessions()[1]) == {"Logged out"}, f"every session, the poller's too, should log out: {sessions()}"
    assert 'msg="imap stopped" mailbox=support' in run.output()


def test_leave_in_place_flags_seen_and_never_takes_a_mail_twice(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run]
) -> None:
    user, pw = dovecot.add_user()
    append(dovecot, user, mail("One", "one@customer.example"), mail("Two", "two@customer.example"))
    config = imap_config([mailbox(dovecot, user, pw, processed_folder=None, poll_interval="0.3s", idle=False)])
    run = serve(config)
    run.wait_tickets(2)
    with dovecot.imap(user) as client:
        client.select_folder("INBOX")
        wait_until(lambda: all(SEEN in f for f in client.get_flags(client.search()).values()), "\\Seen flags", run)
        client.remove_flags(client.search(), [SEEN])  # a human marks them unread again: not new mail
    append(dovecot, user, mail("Three", "three@customer.example"))
    run.wait_tickets(3)
    time.sleep(1.0)  # a few more polling rounds
    assert run.service is not None and run.service.stop() == 0
    run.start()  # and after a restart, the checkpoint still holds
    time.sleep(1.0)
    assert len(run.inbound()) == 3, [(r.status, r.message_id) for r in run.inbound()]
    assert count(dovecot, user, "INBOX") == 3
    state = run.state("support")
    assert state is not None and state.last_uid == 3


def test_dovecot_restart_mid_session_reconnects(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run]
) -> None:
    user, pw = dovecot.add_user()
    run = serve(imap_config([mailbox(dovecot, user, pw)]))
    append(dovecot, user, mail("Before", "before@customer.example"))
    run.wait_tickets(1)
    time.sleep(0.5)
    dovecot.restart()
    wait_until(lambda: 'msg="imap failing" mailbox=support' in run.output(), "a logged connection failure", run)
    append(dovecot, user, mail("After", "after@customer.example"))
    run.wait_tickets(2)
    wait_until(lambda: 'msg="imap working again" mailbox=support' in run.output(), "the recovery logged", run)
    wait_until(lambda: count(dovecot, user, "Processed") == 2, "both mails moved", run)


def test_big_mail_with_more_appended_while_it_is_processed(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run]
) -> None:
    user, pw = dovecot.add_user()
    run = serve(imap_config([mailbox(dovecot, user, pw)]))
    blob = os.urandom(15 * 2**20)  # 15 MiB of data is ~20 MB once base64-encoded
    encoded = base64.encodebytes(blob).decode().replace("\n", "\r\n")
    big = mail("Huge log file", "big@customer.example", headers="MIME-Version: 1.0\r\n"
               "Content-Type: multipart/mixed; boundary=XX\r\n",
               body="--XX\r\nContent-Type: text/plain\r\n\r\nSee attachment.\r\n--XX\r\n"
               "Content-Type: application/octet-stream; name=log.bin\r\nContent-Transfer-Encoding: base64\r\n"
               "Content-Disposition: attachment; filename=log.bin\r\n\r\n" + encoded + "--XX--")  # fmt: skip
    assert len(big) > 20_000_000
    with dovecot.imap(user) as client:
        client.append("INBOX", big)
        for i in range(5):  # these arrive while the big one is being fetched, parsed and stored
            time.sleep(0.2)
            client.append("INBOX", mail(f"Small {i}", f"small{i}@customer.example"))
    tickets = at_least(run.tickets, 6, "6 tickets", run, timeout=90)
    assert sorted(t.subject for t in tickets) == ["Huge log file", *[f"Small {i}" for i in range(5)]]
    wait_until(lambda: count(dovecot, user, "Processed") == 6, "all six moved", run)
    assert count(dovecot, user, "INBOX") == 0
    big_ticket = next(t for t in tickets if t.subject == "Huge log file")
    shown = json.loads(run_cli(run.config, "tickets", "show", big_ticket.number, "--json").stdout)
    [attachment] = shown["messages"][0]["attachments"]
    assert attachment["size"] == len(blob)
    assert len(run.inbound()) == 6


def test_uidvalidity_reset_rescans_without_duplicates(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run]
) -> None:
    user, pw = dovecot.add_user()
    with dovecot.imap(user) as client:
        client.create_folder("Support")
    append(dovecot, user, mail("Alpha", "alpha@customer.example"), mail("Beta", "beta@customer.example"),
           folder="Support")  # fmt: skip
    # polling: a server does not tell an idling client that its folder was renamed away
    config = imap_config([mailbox(dovecot, user, pw, folder="Support", processed_folder=None, idle=False,
                                  poll_interval="0.5s")])  # fmt: skip
    run = serve(config)
    run.wait_tickets(2)
    before = wait_until(lambda: (s := run.state("support")) and s.last_uid == 2 and s, "the checkpoint", run)
    with dovecot.imap(user) as client:  # the admin rebuilds the folder: same mail, new UIDVALIDITY
        client.rename_folder("Support", "Support-old")
        client.create_folder("Support")
        client.select_folder("Support-old")
        client.copy(client.search(), "Support")
    append(dovecot, user, mail("Gamma", "gamma@customer.example"), folder="Support")
    run.wait_tickets(3)
    wait_until(lambda: "UIDVALIDITY of Support changed" in run.output(), "the UIDVALIDITY warning", run)
    wait_until(lambda: (s := run.state("support")) is not None and s.last_uid == 3, "the new checkpoint", run)
    after = run.state("support")
    assert after is not None and after.uidvalidity != before.uidvalidity
    assert sorted(t.subject for t in run.tickets()) == ["Alpha", "Beta", "Gamma"]
    statuses = sorted(r.status for r in run.inbound())
    assert statuses == ["accepted"] * 3 + ["duplicate"] * 2


def test_kill_between_commit_and_move_then_restart_makes_exactly_one_ticket(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run]
) -> None:
    user, pw = dovecot.add_user()
    assert count(dovecot, user, "INBOX") == 0  # Dovecot creates the Maildir at the first login
    blocker = dovecot.maildir(user) / ".Processed"
    blocker.write_text("not a folder: Dovecot cannot create Processed, so every MOVE fails\n")
    config = imap_config([mailbox(dovecot, user, pw, watchdog={"check_interval": "0.3s", "stuck_after": "1s"})],
                         admin_email="admin@example.com")  # fmt: skip
    run = serve(config)
    append(dovecot, user, mail("Crash me", "crash@customer.example"))
    run.wait_tickets(1)  # committed ...
    wait_until(lambda: "left in place" in run.output(), "the failed move", run)
    assert count(dovecot, user, "INBOX") == 1  # ... but not acknowledged on the server
    with dovecot.imap(user) as client:  # and fetched with BODY.PEEK[]: not marked read by us
        client.select_folder("INBOX", readonly=True)
        assert [SEEN not in flags for flags in client.get_flags(client.search()).values()] == [True]
    wait_until(lambda: run.outbox("admin_alert"), "the stuck-mail alert to the admin", run)
    assert run.service is not None
    run.service.stop(signal.SIGKILL)
    blocker.unlink()
    run.start()
    wait_until(lambda: count(dovecot, user, "Processed") == 1, "the move after restart", run)
    assert count(dovecot, user, "INBOX") == 0
    assert len(run.tickets()) == 1
    statuses = [r.status for r in run.inbound()]  # every re-fetch was recognised
    assert statuses.count("accepted") == 1 and set(statuses) == {"accepted", "duplicate"}
    [alert] = run.outbox("admin_alert")
    assert alert.recipients == ["admin@example.com"] and "stuck" in alert.dedupe_key


@pytest.mark.skipif(bool(PG_URL), reason="holds SQLite's write lock; PostgreSQL waits instead of failing")
def test_database_trouble_leaves_the_mail_in_place_until_it_can_be_stored(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run]
) -> None:
    user, pw = dovecot.add_user()
    run = serve(imap_config([mailbox(dovecot, user, pw)]))
    wait_until(lambda: count(dovecot, user, "Processed") == 0 and "created IMAP folder" in run.output(), "a round", run)
    db_file = load_config(run.config).database_url.removeprefix("sqlite:///")
    lock = sqlite3.connect(db_file, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # another writer holds the database longer than the busy timeout
        append(dovecot, user, mail("Locked out", "locked@customer.example"))
        wait_until(lambda: "1 left in place for a retry" in run.output(), "the temporary failure", run)
        assert count(dovecot, user, "INBOX") == 1 and lock.execute("SELECT count(*) FROM ticket").fetchone() == (0,)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    run.wait_tickets(1)
    wait_until(lambda: count(dovecot, user, "Processed") == 1, "the retried mail moved", run)
    assert count(dovecot, user, "INBOX") == 0


def test_two_mailboxes_over_tls_and_starttls_route_to_their_own_help_topics(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run], tmp_path: Path
) -> None:
    general, general_pw = dovecot.add_user()
    outage, outage_pw = dovecot.add_user()
    append(dovecot, general, mail("Question", "q@customer.example"))
    append(dovecot, outage, mail("Everything broke", "broke@customer.example"))
    secret = tmp_path / "outage.secret"
    secret.write_text(outage_pw + "\n")
    tls = {"host": "localhost", "cafile": str(dovecot.cafile), "password": None}  # the certificate names localhost
    general_box = {
        **mailbox(dovecot, general, "", name="general", help_topic="General"),
        **tls,
        "security": "tls",
        "port": dovecot.imaps_port,
        "password_env": "MG_TEST_GENERAL_PW",
    }
    outage_box = {**mailbox(dovecot, outage, "", name="outage", help_topic="Business Critical Outage"), **tls,
                  "security": "starttls", "password_file": str(secret)}  # fmt: skip
    run = serve(imap_config([general_box, outage_box]), env={"MG_TEST_GENERAL_PW": general_pw})
    tickets = run.wait_tickets(2)
    assert {t.subject: t.help_topic for t in tickets} == {
        "Question": "General", "Everything broke": "Business Critical Outage"}  # fmt: skip
    assert {(r.mailbox, r.message_id) for r in run.inbound()} == {
        ("general", "<q@customer.example>"), ("outage", "<broke@customer.example>")}  # fmt: skip
    log = dovecot.log_path.read_text()
    for user in (general, outage):
        assert re.search(rf"Login: user=<{user}>, method=PLAIN, .*\bTLS\b", log), f"{user} logged in without TLS"


def test_reload_starts_an_added_mailbox_and_keeps_the_unchanged_one(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run]
) -> None:
    first, first_pw = dovecot.add_user()
    second, second_pw = dovecot.add_user()
    run = serve(imap_config([mailbox(dovecot, first, first_pw, name="first")]))
    append(dovecot, second, mail("For the second", "second@customer.example"))
    append(dovecot, first, mail("For the first", "first@customer.example"))
    run.wait_tickets(1)
    imap_config([mailbox(dovecot, first, first_pw, name="first"), mailbox(dovecot, second, second_pw, name="second")])
    assert run.service is not None
    run.service.proc.send_signal(signal.SIGHUP)
    run.wait_tickets(2)
    assert run.output().count('msg="imap watching" mailbox=first') == 1  # unchanged: not restarted
    assert 'msg="imap watching" mailbox=second' in run.output()


def _failed_logins(dovecot: DovecotServer, user: str) -> int:
    return len(re.findall(rf"auth failed.*user=<{user}>", dovecot.log_path.read_text()))


def test_wrong_password_backs_off_alerts_once_and_other_mailbox_keeps_working(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run], tmp_path: Path
) -> None:
    good, good_pw = dovecot.add_user()
    bad, _ = dovecot.add_user()
    secret = tmp_path / "bad.secret"
    secret.write_text("not-the-password\n")
    watchdog = {"check_interval": "0.3s", "failing_after": "0.5s"}
    run = serve(imap_config([
        {**mailbox(dovecot, bad, "", name="bad", password_file=str(secret), watchdog=watchdog), "password": None},
        mailbox(dovecot, good, good_pw, name="good"),
    ], admin_email="admin@example.com"))  # fmt: skip
    append(dovecot, good, mail("Still working", "working@customer.example"))
    run.wait_tickets(1)
    wait_until(lambda: _failed_logins(dovecot, bad) >= 1, "the failed login in Dovecot's log", run)
    wait_until(lambda: run.outbox("admin_alert"), "the admin alert", run)
    time.sleep(2)  # without backoff, a poller would have retried ~4 times by now (Dovecot answers in 0.5 s)
    assert _failed_logins(dovecot, bad) == 1
    lines = [line for line in run.output().splitlines() if 'msg="imap failing" mailbox=bad error="login as' in line]
    assert len(lines) == 1 and "retry_in=" in lines[0], lines
    [alert] = run.outbox("admin_alert")  # once per incident, although the watchdog checked many times
    assert alert.dedupe_key.startswith("admin_alert:bad:failing:")
    assert "login as" in alert.text and alert.recipients == ["admin@example.com"]
    outgoing = tmp_path / "outgoing" / "new"  # and the outbox sender really delivers it
    wait_until(lambda: any(b"IMAP intake failing" in f.read_bytes() for f in outgoing.glob("*")), "the mail", run)
    append(dovecot, good, mail("Still working 2", "working2@customer.example"))
    run.wait_tickets(2)
    state = run.state("bad")
    assert state is not None and state.last_error and "refused" in state.last_error


def test_imap_check_reports_folders_capabilities_and_failures(
    dovecot: DovecotServer, imap_config: Callable[..., Path]
) -> None:
    good, good_pw = dovecot.add_user()
    bad, _ = dovecot.add_user()
    append(dovecot, good, mail("Waiting", "waiting@customer.example"))
    config = imap_config([mailbox(dovecot, good, good_pw, name="good", quarantine_folder="Quarantine")])
    result = run_cli(config, "imap", "check")
    assert result.code == 0, result.stderr
    assert f"good: OK {good}@127.0.0.1:{dovecot.imap_port} (plain), IDLE, MOVE" in result.stdout
    assert re.search(r"INBOX \(watched\): 1 messages, 1 unseen, UIDVALIDITY \d+, UIDNEXT 2", result.stdout)
    assert "Processed (processed): missing (created at the first move)" in result.stdout
    assert "capabilities: " in result.stdout and " IDLE " in result.stdout

    untrusted = {**mailbox(dovecot, good, good_pw, name="untrusted"), "security": "tls", "port": dovecot.imaps_port}
    config = imap_config([mailbox(dovecot, good, good_pw, name="good"), untrusted,
                          mailbox(dovecot, bad, "wrong", name="bad", folder="INBOX")])  # fmt: skip
    result = run_cli(config, "imap", "check", "--json")
    assert result.code == 1
    reports = {r["name"]: r for r in json.loads(result.stdout)}
    assert reports["good"]["ok"] and reports["good"]["folders"]["INBOX"]["messages"] == 1
    assert not reports["bad"]["ok"] and "login as" in reports["bad"]["problems"][0]
    assert not reports["untrusted"]["ok"]  # a self-signed certificate without cafile: refused, not ignored
    assert "TLS with 127.0.0.1" in reports["untrusted"]["problems"][0]
    assert "CERTIFICATE_VERIFY_FAILED" in reports["untrusted"]["problems"][0]


# ------------------------------------------------------------------ a server without MOVE and without IDLE
class _OldDovecot(DovecotServer):
    """The same private Dovecot, advertising neither MOVE nor IDLE (as some older servers do)."""

    def _write_config(self) -> None:
        super()._write_config()
        with self.config_path.open("a") as conf:
            conf.write("imap_capability = IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE UIDPLUS NAMESPACE\n")


@pytest.fixture
def old_dovecot() -> Iterator[DovecotServer]:
    server = _OldDovecot().start()
    yield server
    server.stop()


def test_server_without_move_or_idle_is_polled_and_acknowledged_by_copy_and_expunge(
    old_dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run]
) -> None:
    user, pw = old_dovecot.add_user()
    with old_dovecot.imap(user) as client:
        assert not client.has_capability("MOVE") and not client.has_capability("IDLE")
    append(old_dovecot, user, mail("Old server", "old@customer.example"))
    run = serve(imap_config([mailbox(old_dovecot, user, pw, poll_interval="0.5s")]))
    run.wait_tickets(1)
    append(old_dovecot, user, mail("Old server again", "old2@customer.example"))
    run.wait_tickets(2)
    wait_until(lambda: count(old_dovecot, user, "Processed") == 2, "both copied to Processed", run)
    assert count(old_dovecot, user, "INBOX") == 0


def test_copy_expunge_fallback_removes_only_the_moved_mail(dovecot: DovecotServer) -> None:
    user, _ = dovecot.add_user()
    append(dovecot, user, *(mail(f"M{i}", f"m{i}@customer.example") for i in range(4)))
    with dovecot.imap(user) as client:
        client.create_folder("Done")
        client.select_folder("INBOX")
        client.add_flags([4], [DELETED])  # a human's pending deletion must survive our UID EXPUNGE
        assert finish_messages(client, [1, 2], "Done", use_move=False) == []
        assert sorted(client.search()) == [3, 4]
        client.select_folder("Done", readonly=True)
        subjects = sorted(d[b"ENVELOPE"].subject for d in client.fetch(client.search(), ["ENVELOPE"]).values())
        assert subjects == [b"M0", b"M1"]


def test_check_config_refuses_plain_imap_to_a_remote_host(imap_config: Callable[..., Path]) -> None:
    config = imap_config([{"name": "remote", "host": "imap.example.com", "security": "plain",
                           "username": "u", "password": "p"}])  # fmt: skip
    result = run_cli(config, "check-config")
    assert result.code == 1
    assert "security: plain sends the password unencrypted" in result.stderr
    assert re.search(r"mailgate\.yaml:\d+: ", result.stderr)


# ------------------------------------------------------------------------------------- OAuth2 (XOAUTH2)
class _OAuthDovecot(DovecotServer):
    """Dovecot offering XOAUTH2; with a passwd-file passdb the bearer token is checked like a password."""

    def _write_config(self) -> None:
        super()._write_config()
        text = self.config_path.read_text().replace("auth_mechanisms = plain login", "auth_mechanisms = xoauth2")
        self.config_path.write_text(text)


@pytest.fixture
def oauth_dovecot() -> Iterator[DovecotServer]:
    server = _OAuthDovecot().start()
    yield server
    server.stop()


def test_oauth2_token_from_command_and_from_json_file_with_expiry_alert(
    oauth_dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run], tmp_path: Path
) -> None:
    dc = oauth_dovecot
    by_command, token1 = dc.add_user()
    by_file, token2 = dc.add_user()
    for user in (by_command, by_file):  # the server takes no passwords at all, like Gmail and Microsoft 365
        client = dc.imap(user, login=False)
        with pytest.raises(LoginError):
            client.login(user, dc.users[user])
        client.oauth2_login(user, dc.users[user])
        client.append("INBOX", mail(f"Via {user}", f"{user}@customer.example"))
        client.logout()
    (tmp_path / "token1").write_text(token1)
    token_file = tmp_path / "token2.json"
    soon = datetime.now(UTC) + timedelta(minutes=5)
    token_file.write_text(json.dumps({"access_token": token2, "expires_at": soon.isoformat()}))

    def oauth_box(user: str, name: str, **creds: Any) -> dict[str, Any]:
        return {**mailbox(dc, user, "", name=name, watchdog={"check_interval": "0.3s"}), "password": None, **creds}

    run = serve(imap_config([
        oauth_box(by_command, "cmd", oauth2_token_command=f"cat {tmp_path / 'token1'}"),
        oauth_box(by_file, "file", oauth2_token_file=str(token_file)),
    ], admin_email="admin@example.com"))  # fmt: skip
    tickets = run.wait_tickets(2)
    assert sorted(t.subject for t in tickets) == sorted([f"Via {by_command}", f"Via {by_file}"])
    for user in (by_command, by_file):
        assert re.search(rf"Login: user=<{user}>, method=XOAUTH2", dc.log_path.read_text())
    [alert] = wait_until(lambda: run.outbox("admin_alert"), "the token expiry alert", run)
    assert alert.dedupe_key.startswith("admin_alert:file:token_expiry:") and str(token_file) in alert.text


def test_quarantined_mail_goes_to_the_quarantine_folder(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run]
) -> None:
    user, pw = dovecot.add_user()
    bounce = (Path(__file__).resolve().parent.parent / "corpus" / "dsn-bounce.eml").read_bytes()
    append(dovecot, user, bounce, mail("A real question", "real@customer.example"))
    run = serve(imap_config([mailbox(dovecot, user, pw, quarantine_folder="Quarantine")]))
    run.wait_tickets(1)
    wait_until(lambda: count(dovecot, user, "Quarantine") == 1, "the bounce in Quarantine", run)
    wait_until(lambda: count(dovecot, user, "Processed") == 1, "the question in Processed", run)
    assert count(dovecot, user, "INBOX") == 0
    assert sorted(r.status for r in run.inbound()) == ["accepted", "quarantined"]


def test_a_hung_server_holds_up_only_its_own_mailbox(
    dovecot: DovecotServer, imap_config: Callable[..., Path], serve: Callable[..., Run]
) -> None:
    """A server that accepts the connection and never says a word (a hung IMAP proxy) keeps its own poller
    waiting for as long as its timeout; the other mailbox's mail is picked up meanwhile as usual."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.extend(iter(lambda: listener.accept()[0], None)), daemon=True).start()
    good, pw = dovecot.add_user()
    try:
        run = serve(imap_config([
            {"name": "hung", "host": "127.0.0.1", "port": listener.getsockname()[1], "security": "plain",
             "username": "nobody", "password": "x", "timeout": "120s"},
            mailbox(dovecot, good, pw, name="good"),
        ]))  # fmt: skip
        wait_until(lambda: accepted, "the hung server's connection", run)
        for n in range(3):
            append(dovecot, good, mail(f"Meanwhile {n}", f"meanwhile-{n}@customer.example"))
        run.wait_tickets(3)
        assert count(dovecot, good, "Processed") == 3 or wait_until(
            lambda: count(dovecot, good, "Processed") == 3, "the moves", run)
        assert len(accepted) == 1 and 'msg="imap failing" mailbox=hung' not in run.output()  # still waiting
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
