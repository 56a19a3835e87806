"""``mailgate ingest`` with serve running: the mail is handed to the daemon over state_dir/intake.sock.

The MTA's contract is the direct path's (0 stored, 65 refused, 75 try again, the same lines on stderr);
what changes is who stores the mail. These tests run the real CLI against a real serve, and try what a
local user could send to the socket: garbage, a lie about the size, a mail over the limit, a client that
hangs up. The daemon keeps serving through all of it, and a stopped or killed daemon's socket sends
``ingest`` back to storing the mail itself.
"""

from __future__ import annotations

import json
import mailbox
import signal
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailgate.intake.handoff import Handoff
from tests.conftest import (
    MakeConfig,
    Service,
    cli_json,
    make_mail,
    run_cli,
    sql_rows,
    start_service,
    wait_until,
)
from tests.e2e.test_pipe import demo_rules


def _socket(config: Path) -> Path:
    return config.parent.parent / "state" / "intake.sock"


@pytest.fixture
def daemon(config_path: Path, tmp_path: Path) -> Iterator[Service]:
    svc = start_service(config_path, tmp_path / "serve.log")
    try:
        wait_until(_socket(config_path).exists, what="the hand-off socket")
        yield svc
    finally:
        if svc.proc.poll() is None:
            svc.stop()


def _inbound(config: Path) -> list[tuple[str, str, str, Any]]:
    return [(r[0], r[1], r[2], r[3]) for r in sql_rows(config, "SELECT source, peer, mail_from, rcpt_tos FROM inbound "
                                                               "ORDER BY id")]


def test_piped_mail_is_stored_by_the_running_daemon_with_its_envelope(config_path: Path, daemon: Service) -> None:
    result = run_cli(config_path, "ingest", stdin=b"From pat@customer.example Mon Mar  2 10:00:00 2026\n"
                     + make_mail(message_id="<h-1@customer.example>"),
                     env={"SENDER": "pat@customer.example", "RECIPIENT": "outage@example.com"})
    assert result.code == 0, result.stderr
    [ticket] = cli_json(config_path, "tickets", "list")
    assert result.stderr.strip() == f"stdin: accepted ticket {ticket['number']}"
    [(source, peer, mail_from, rcpt)] = _inbound(config_path)
    recipients = json.loads(rcpt) if isinstance(rcpt, str) else rcpt  # (PostgreSQL's driver decodes JSON)
    assert (source, peer, mail_from, recipients) == ("pipe", "local", "pat@customer.example", ["outage@example.com"])
    wait_until(lambda: "source=pipe peer=local" in daemon.output(), what="the daemon's mail received line")
    again = run_cli(config_path, "ingest", stdin=make_mail(message_id="<h-1@customer.example>"), env={"SENDER": ""})
    assert again.code == 0 and "duplicate" in again.stderr, again.stderr  # a re-delivery: one ticket
    assert len(cli_json(config_path, "tickets", "list")) == 1


def test_an_mbox_goes_over_one_connection_and_each_mail_gets_its_own_answer(config_path: Path, daemon: Service,
                                                                            tmp_path: Path) -> None:
    """More mails than the client sends ahead of their answers, a duplicate among them: each line of
    stderr names the ticket of its own mail (answers come back in order)."""
    box = mailbox.mbox(tmp_path / "in.mbox")
    for i in range(20):
        box.add(make_mail(f"Case {i}", message_id=f"<h-box-{i}@customer.example>"))
    box.add(make_mail("Case 3", message_id="<h-box-3@customer.example>"))  # #21: the same mail as #4
    box.close()
    result = run_cli(config_path, "ingest", str(tmp_path / "in.mbox"))
    assert result.code == 0, result.stderr
    assert "21 mail(s) in" in result.stderr and "20 accepted, 1 duplicate" in result.stderr
    by_subject = {t["subject"]: t["number"] for t in cli_json(config_path, "tickets", "list")}
    lines = dict(line.split(": ", 1) for line in result.stderr.splitlines() if "in.mbox#" in line)
    for i in range(20):
        assert lines[f"{tmp_path / 'in.mbox'}#{i + 1}"] == f"accepted ticket {by_subject[f'Case {i}']}"
    assert lines[f"{tmp_path / 'in.mbox'}#21"].startswith(f"duplicate ticket {by_subject['Case 3']}")
    assert {row[0] for row in _inbound(config_path)} == {"pipe"}


def test_policy_rejection_and_size_limit_exit_65_through_the_daemon(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(intake={"smtp": {"max_message_size": "4KiB"}}, rules=demo_rules({
        "name": "no-lottery",
        "when": {"any": [{"field": "subject", "op": "contains", "value": "lottery"}]},
        "then": {"reject": "We do not accept lottery announcements"},
    }))
    svc = start_service(config, tmp_path / "serve.log")
    try:
        wait_until(_socket(config).exists, what="the hand-off socket")
        refused = run_cli(config, "ingest", stdin=make_mail("You won the lottery", message_id="<h-spam@x.example>"))
        assert refused.code == 65 and "We do not accept lottery announcements" in refused.stderr, refused.stderr
        big = run_cli(config, "ingest", stdin=make_mail(body="z" * 9000))
        assert big.code == 65 and "too large" in big.stderr, big.stderr
        fine = run_cli(config, "ingest", stdin=make_mail(message_id="<h-fine@customer.example>"))
        assert fine.code == 0, fine.stderr
        assert [t["subject"] for t in cli_json(config, "tickets", "list")] == ["Printer on fire"]
        assert {row[0] for row in _inbound(config)} == {"pipe"}  # (the refused one is recorded too)
    finally:
        svc.stop()


def test_what_a_local_user_sends_to_the_socket_never_stalls_or_fools_the_daemon(config_path: Path,
                                                                                 daemon: Service) -> None:
    path = str(_socket(config_path))
    attempts = [
        b"not json at all\n",
        b'{"from": "x@y", "to": "not a list", "size": 10}\n0123456789',
        b'{"from": "x@y", "to": [], "size": -5}\n',
        b'[1, 2, 3]\n',
        b'{"from": "x@y", "to": [], "size": 1000000}\nonly a little',  # then hangs up: a lie about the size
        b"{" + b"x" * 70000,  # a header line that never ends
    ]
    for attempt in attempts:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(60)
            sock.connect(path)
            sock.sendall(attempt)
            sock.shutdown(socket.SHUT_WR)
            answer = sock.makefile("rb").read()
        assert b"stored" not in answer and b'"status"' not in answer, (attempt[:40], answer)
    assert sql_rows(config_path, "SELECT count(*) FROM inbound")[0][0] == 0  # nothing half-stored
    result = run_cli(config_path, "ingest", stdin=make_mail(message_id="<h-after@customer.example>"))
    assert result.code == 0, result.stderr
    assert _inbound(config_path)[0][0] == "pipe"  # still the daemon that stores it
    assert daemon.proc.poll() is None


def test_the_socket_is_for_the_daemons_user_and_group_only(config_path: Path, daemon: Service) -> None:
    mode = stat.S_IMODE(_socket(config_path).stat().st_mode)
    assert mode & 0o007 == 0, oct(mode)


def test_stopped_or_killed_daemon_sends_ingest_back_to_storing_itself(config_path: Path, tmp_path: Path) -> None:
    svc = start_service(config_path, tmp_path / "serve.log")
    wait_until(_socket(config_path).exists, what="the hand-off socket")
    svc.stop()
    assert not _socket(config_path).exists()  # removed on a clean stop
    assert run_cli(config_path, "ingest", stdin=make_mail(message_id="<h-s1@customer.example>")).code == 0

    svc = start_service(config_path, tmp_path / "serve2.log")
    wait_until(_socket(config_path).exists, what="the hand-off socket")
    svc.stop(signal.SIGKILL)
    assert _socket(config_path).exists()  # left behind by kill -9: nobody answers on it
    result = run_cli(config_path, "ingest", stdin=make_mail(message_id="<h-s2@customer.example>"))
    assert result.code == 0, result.stderr
    assert [row[:2] for row in _inbound(config_path)] == [("pipe", ""), ("pipe", "")]  # both stored directly

    svc = start_service(config_path, tmp_path / "serve3.log")  # a new daemon takes over the stale socket
    try:
        wait_until(lambda: run_cli(config_path, "ingest", stdin=make_mail(message_id="<h-s3@customer.example>"))
                   .code == 0, what="a third mail stored")
        assert _inbound(config_path)[-1][:2] == ("pipe", "local")
    finally:
        svc.stop()


def test_a_daemon_that_hangs_up_before_answering_is_a_temporary_failure(tmp_path: Path) -> None:
    """The MTA keeps the mail (75) and tries again; a mail stored just before the loss is then a duplicate."""
    path = tmp_path / "intake.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    mail = make_mail()

    def hang_up() -> None:  # takes the whole mail (so that sending it succeeds), then hangs up unanswered
        conn, _ = server.accept()
        got = 0
        while got < len(mail) and (chunk := conn.recv(65536)):
            got += len(chunk)
        conn.close()

    thread = threading.Thread(target=hang_up)
    thread.start()
    handoff = Handoff.open(tmp_path)
    assert handoff is not None
    assert handoff.post(mail, "pat@customer.example", None) is None
    answer = handoff.receive()
    handoff.close()
    thread.join(timeout=60)
    server.close()
    assert answer.kind == "tempfail" and "went away" in (answer.reason or "")
    assert Handoff.open(tmp_path / "nowhere") is None
