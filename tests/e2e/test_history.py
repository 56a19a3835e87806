"""``ingest --history``: an archive imported as history mails nobody, keeps its dates and threads,
and an interrupted import run again leaves no duplicate."""

from __future__ import annotations

import mailbox
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from tests.conftest import PATIENCE, REPO, run_cli, sql_rows, wait_until

START = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)


def archive(path: Path, threads: int) -> Path:
    """``threads`` conversations of three mails each (a question, an agent's answer, a thank-you),
    in the order a mailbox keeps them: by date, threads interleaved."""
    box = mailbox.mbox(path)
    mails = []
    for t in range(threads):
        day = START + timedelta(hours=7 * t)
        first = f"<q{t}@customer.example>"
        mails.append((day, f"From: Cust {t} <c{t}@customer.example>\nTo: support@example.com\n"
                           f"Subject: Question {t}\nMessage-ID: {first}\n", f"Question number {t}."))
        mails.append((day + timedelta(hours=2), f"From: Jane <jane@example.com>\nTo: c{t}@customer.example\n"
                      f"Subject: Re: Question {t}\nMessage-ID: <a{t}@example.com>\nIn-Reply-To: {first}\n",
                      f"Answer {t}."))
        mails.append((day + timedelta(days=1), f"From: c{t}@customer.example\nTo: support@example.com\n"
                      f"Subject: Re: Question {t}\nMessage-ID: <t{t}@customer.example>\n"
                      f"In-Reply-To: <a{t}@example.com>\nReferences: {first} <a{t}@example.com>\n", "Thanks!"))
    for when, head, body in sorted(mails, key=lambda m: m[0]):
        box.add(f"{head}Date: {format_datetime(when)}\n\n{body}\n".encode())
    box.close()
    return path


def test_history_import_mails_nobody_keeps_dates_and_threads(config_path: Path, tmp_path: Path) -> None:
    mbox = archive(tmp_path / "old.mbox", threads=10)
    result = run_cli(config_path, "ingest", "--history", str(mbox))
    assert result.code == 0, result.stderr
    assert "30 mail(s)" in result.stderr and "30 accepted" in result.stderr and "10 ticket(s)" in result.stderr
    tickets = sql_rows(config_path, "SELECT number, status, created_at, closed_at FROM ticket ORDER BY id")
    assert len(tickets) == 10 and {status for _, status, _, _ in tickets} == {"closed"}
    created = sql_rows(config_path, "SELECT min(created_at) FROM ticket")[0][0]
    assert str(created).startswith("2024-03-04 09:00")  # the archive's date, not today's
    assert sql_rows(config_path, "SELECT count(*) FROM message") == [(30,)]  # each thread on its ticket
    assert sql_rows(config_path, "SELECT count(*) FROM outbox") == [(0,)]  # no ack, no alert, nothing
    assert sql_rows(config_path, "SELECT count(*) FROM sla_timer") == [(0,)]  # and no SLA rung to come

    again = run_cli(config_path, "ingest", "--history", str(mbox))
    assert again.code == 0 and "30 duplicate" in again.stderr
    assert sql_rows(config_path, "SELECT count(*) FROM ticket") == [(10,)]
    assert sql_rows(config_path, "SELECT count(*) FROM outbox") == [(0,)]


def test_an_interrupted_history_import_run_again_stores_each_mail_once(config_path: Path, tmp_path: Path) -> None:
    mbox = archive(tmp_path / "big.mbox", threads=200)
    assert run_cli(config_path, "db", "upgrade").code == 0
    proc = subprocess.Popen([sys.executable, "-m", "mailgate", "ingest", "--history", str(mbox), "-c",
                             str(config_path)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: proc.poll() is not None or sql_rows(config_path, "SELECT count(*) FROM inbound")[0][0] >= 64,
                   what="a first batch committed")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(PATIENCE)
        assert proc.stderr is not None
        proc.stderr.close()
    rerun = run_cli(config_path, "ingest", "--history", str(mbox), timeout=PATIENCE * 2)
    assert rerun.code == 0, rerun.stderr
    assert sql_rows(config_path, "SELECT count(*) FROM message") == [(600,)]
    assert sql_rows(config_path, "SELECT count(*) FROM ticket") == [(200,)]
    assert sql_rows(config_path, "SELECT count(*) FROM ticket WHERE status != 'closed'") == [(0,)]
    assert sql_rows(config_path, "SELECT count(*) FROM outbox") == [(0,)]


def test_progress_on_a_terminal_and_a_summary_always(config_path: Path, tmp_path: Path) -> None:
    import os
    import pty

    mbox = archive(tmp_path / "old.mbox", threads=40)
    assert run_cli(config_path, "db", "upgrade").code == 0
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "mailgate", "ingest", "--history", str(mbox), "-c",
                               str(config_path)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=follower,
                              timeout=PATIENCE)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all was read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    assert "\r64 mail(s)" in text and "120 mail(s) in" in text, text  # a batch's progress, then the summary
    quiet = run_cli(config_path, "ingest", "--history", "-q", str(mbox))
    assert quiet.code == 0 and quiet.stderr == ""
