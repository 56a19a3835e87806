"""Outages of what serve depends on, while mail streams in: PostgreSQL, the relay, Dovecot, the disk.

What must hold in each: while the part is down, senders hear "try again later" (SMTP 451, pipe exit
75), never a 250 for mail that is not stored and never a permanent 5xx that would bounce it; when the
part is back, everything acknowledged is stored once and every acknowledgment reaches the relay,
again at most once more per sender process and outage (the mail on the wire when it broke).

Real parts only: a private PostgreSQL database (skipped when none is reachable), the aiosmtpd sink
stopped and started on its port, the test Dovecot restarted, and a small tmpfs as the state dir
(skipped when mounting is not permitted). About 1-2 minutes in all on a loaded 2-core machine.
"""

from __future__ import annotations

import errno
import gc
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from tests.conftest import MakeConfig, SmtpSink, make_mail, run_cli, sql_rows, wait_until
from tests.resilience.harness import (
    LEASE,
    Appender,
    Mta,
    Supervisor,
    folder_count,
    folder_ids,
    intake_check,
    mail_factory,
    outgoing_check,
    summary,
    timed,
    wait_outbox_sent,
)
from tests.support.dovecot_fixture import DovecotServer

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DOWN_FOR = 12.0  # seconds the part stays down: long enough for several retries of every kind


def relay(sink: SmtpSink, **extra: Any) -> dict[str, Any]:
    return {"transport": "smtp", "smtp": {"host": sink.host, "port": sink.port},
            "retry": {"first": "1s", "maximum": "2s"}, **extra}


def temporary_only(codes: list[int]) -> None:
    permanent = [c for c in codes if c >= 500]
    assert not permanent, f"permanent refusals would make the sender bounce the mail: {Counter(permanent)}"


def refusals(codes: list[int]) -> int:
    """Answers other than 250 (which ones they are is checked afterwards, with the whole stream's)."""
    return sum(1 for c in codes if c != 250)


def hold(seconds: float) -> None:
    """The outage's length itself (the scenario, not a wait for an event)."""
    time.sleep(seconds)


# --------------------------------------------------------------------------- (a) PostgreSQL refuses connections
@pytest.fixture
def private_database() -> Iterator[tuple[Any, str, str]]:
    """A database of its own (CREATE DATABASE), so refusing its connections touches nobody else."""
    sa = pytest.importorskip("sqlalchemy")
    try:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # no server, no psycopg, no trust for postgres@127.0.0.1
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 not reachable as postgres: {exc!r}"[:300])
    name = f"mg_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin, name, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


def test_postgresql_refusing_connections_mid_stream(
    private_database: tuple[Any, str, str], make_config: MakeConfig, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    admin, name, url = private_database
    # a sender cut off from the database leaves its claimed rows to the lease: keep it short
    config = make_config(database={"url": url}, outbound=relay(smtp_sink, lease=LEASE),
                         notifications={"kinds": {"alert_new": False}})
    piped = make_mail("Piped during the outage", message_id="<piped-outage@customer.example>")
    with Supervisor(tmp_path / "serve.log") as sup, timed() as elapsed:
        daemon = sup.start(config)
        mta = sup.track(Mta(daemon.host, daemon.port, clients=3, feed=mail_factory("pg")).start())
        wait_until(lambda: len(mta.acked) >= 30, timeout=120, what="30 mails accepted", log=daemon.output)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        down_at = time.monotonic()
        acked_before = mta.acked_set()
        try:
            wait_until(lambda: refusals(mta.codes_since(down_at + 1)) >= 5, timeout=120,
                       what="mail refused while the database is down", log=daemon.output)
            pipe_down = run_cli(config, "ingest", stdin=piped)
            hold(max(0.0, DOWN_FOR - (time.monotonic() - down_at)))
            up_at = time.monotonic()
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        during = [c for _, c, _, when in mta.answers if down_at + 1 <= when <= up_at]
        wait_until(lambda: len(mta.acked) >= len(acked_before) + 30, timeout=180,
                   what="30 more mails accepted after the outage", log=daemon.output)
        mta.drain(log=daemon.output)
        pipe_up = run_cli(config, "ingest", stdin=piped)
        wait_outbox_sent(config, log=daemon.output)
        alive = daemon.alive()
        assert daemon.stop() == 0
        acked = mta.acked_set() | {"<piped-outage@customer.example>"}
        intake = intake_check(config, acked)
        outgoing = outgoing_check(config, smtp_sink)
        summary("outage/postgresql", down_seconds=round(up_at - down_at, 1), mails=len(mta.offered),
                acked=len(acked), answers_while_down=dict(Counter(during)), pipe_exit_while_down=pipe_down.code,
                lost=len(intake.lost), doubled=len(intake.doubled), acks=outgoing.rows,
                duplicate_sends=outgoing.duplicate_sends, seconds=elapsed())
    assert alive, "serve must ride out a database outage"
    temporary_only([code for _, code, _, _ in mta.answers])
    assert pipe_down.code == 75, f"pipe during the outage: exit {pipe_down.code}: {pipe_down.stderr[-2000:]}"
    assert pipe_up.code == 0, pipe_up.stderr
    assert not intake.lost, f"acknowledged but lost: {sorted(intake.lost)[:5]}"
    assert not intake.doubled and not intake.ticket_doubled
    assert intake.tickets == len(acked)
    assert outgoing.unsent == 0 and not outgoing.never_delivered
    assert outgoing.duplicate_sends <= 1, f"{outgoing.duplicate_sends} acks sent twice: {outgoing.worst}"


# --------------------------------------------------------------------------- (b) the relay down and back
def last_errors(config: Path) -> list[str]:
    """Why each unsent row's last attempt failed (psycopg would read a % in SQL text as a placeholder)."""
    return [error for status, error in sql_rows(config, "SELECT status, last_error FROM outbox")
            if status != "sent" and error]


# Stopping aiosmtpd's controller while our sender is connected leaves that server-side transport unclosed
# (aiosmtpd's, not ours); it is collected here, inside this test, and its warning ignored.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_relay_refusing_then_gone_then_back_delivers_everything_once(
    make_config: MakeConfig, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    config = make_config(outbound=relay(smtp_sink), notifications={"kinds": {"alert_new": False}})
    with Supervisor(tmp_path / "serve.log") as sup, timed() as elapsed:
        daemon = sup.start(config)
        mta = sup.track(Mta(daemon.host, daemon.port, clients=2, feed=mail_factory("relay")).start())
        smtp_sink.wait_for(5, timeout=120)
        smtp_sink.answer = "451 4.3.0 relay busy, try later"
        wait_until(lambda: sum("451" in error for error in last_errors(config)) >= 5, timeout=120,
                   what="rows refused with 451", log=daemon.output)
        smtp_sink.stop()
        gc.collect()
        wait_until(lambda: sum("451" not in error for error in last_errors(config)) >= 3, timeout=120,
                   what="rows failing to connect", log=daemon.output)
        mta.drain(log=daemon.output)
        smtp_sink.answer = None
        smtp_sink.start()
        wait_outbox_sent(config, log=daemon.output)
        [(retried,)] = sql_rows(config, "SELECT count(*) FROM outbox WHERE attempts > 1")
        assert daemon.stop() == 0
        gc.collect()
        outgoing = outgoing_check(config, smtp_sink)
        summary("outage/relay", mails=len(mta.acked), acks=outgoing.rows, retried_rows=retried,
                lost=len(outgoing.never_delivered), duplicate_sends=outgoing.duplicate_sends, seconds=elapsed())
    assert retried >= 8, "the outage should have made rows wait and retry"
    assert outgoing.rows == len(mta.acked) and outgoing.unsent == 0
    assert not outgoing.never_delivered and outgoing.duplicate_sends == 0, outgoing.worst


# --------------------------------------------------------------------------- (c) Dovecot restarted mid-stream
def test_dovecot_restarts_mid_stream_lose_and_double_nothing(
    dovecot: DovecotServer, make_config: MakeConfig, tmp_path: Path
) -> None:
    user, password = dovecot.add_user()
    box = {"name": "support", "host": dovecot.host, "port": dovecot.imap_port, "security": "plain",
           "username": user, "password": password, "processed_folder": "Processed", "poll_interval": "2s"}
    config = make_config(intake={"imap": [box]})
    appender = Appender(dovecot, user)
    restarts = 0
    with Supervisor(tmp_path / "serve.log") as sup, timed() as elapsed:
        sup.track(appender)
        daemon = sup.start(config)
        for _ in range(3):
            appender.start()
            moved = folder_count(dovecot, user, "Processed")
            wait_until(lambda m=moved: folder_count(dovecot, user, "Processed") >= m + 10, timeout=120,
                       what="10 more mails moved", log=daemon.output)
            appender.halt()  # our own APPEND must not be cut off: whether it landed would be unknown
            dovecot.restart()
            restarts += 1
        appender.start()
        wait_until(lambda: 'msg="imap working again"' in daemon.output(), timeout=180, what="the poller back",
                   log=daemon.output)
        appender.halt()
        total = len(appender.appended)
        wait_until(lambda: folder_count(dovecot, user, "Processed") >= total, timeout=240,
                   what=f"all {total} mails moved", log=daemon.output)
        assert daemon.stop() == 0
        processed, inbox = folder_ids(dovecot, user, "Processed"), folder_ids(dovecot, user, "INBOX")
        intake = intake_check(config, set(appender.appended))
        summary("outage/dovecot-restart", restarts=restarts, mails=total, lost=len(intake.lost),
                doubled=len(intake.doubled), refetched=intake.duplicate_rows, seconds=elapsed())
    assert Counter(processed) == Counter(appender.appended) and not inbox
    assert not intake.lost and not intake.doubled and not intake.ticket_doubled and intake.tickets == total


# --------------------------------------------------------------------------- (d) the state dir's disk full
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, unmounted at the end whatever happened."""
    mount = tmp_path / "state"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(out: BinaryIO) -> None:
    """Write to a file until the filesystem says ENOSPC. The file is opened beforehand, before the daemon
    starts: on a loaded machine the daemon may fill the disk itself before this runs, and then even
    opening an existing file can fail with ENOSPC on tmpfs."""
    try:
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc


def test_full_state_disk_answers_451_and_recovers(small_disk: Path, make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(database={"url": f"sqlite:///{small_disk / 'mailgate.db'}"})
    piped = make_mail("Piped to a full disk", message_id="<piped-full@customer.example>")
    filler = small_disk / "filler"
    with Supervisor(tmp_path / "serve.log") as sup, timed() as elapsed, filler.open("ab", buffering=0) as filling:
        # freed with the filler: room to recover whoever filled the disk. More than SQLite's WAL holds before
        # its automatic checkpoint (1000 pages, 4 MiB): a WAL that filled the disk needs that much room in
        # the database file to be checkpointed, and until it is, every write fails as "disk is full"
        reserve = small_disk / "reserve"
        reserve.write_bytes(b"\0" * (6 << 20))
        daemon = sup.start(config)
        mta = sup.track(Mta(daemon.host, daemon.port, clients=2, feed=mail_factory("disk", size=20_000)).start())
        wait_until(lambda: len(mta.acked) >= 10, timeout=120, what="10 mails accepted", log=daemon.output)
        fill(filling)
        full_at = time.monotonic()
        wait_until(lambda: refusals(mta.codes_since(full_at)) >= 5, timeout=120,
                   what="mail refused on a full disk", log=daemon.output)
        pipe_full = run_cli(config, "ingest", stdin=piped)
        during = mta.codes_since(full_at)
        alive_when_full = daemon.alive()
        filling.truncate(0)  # an open file's blocks are not freed by unlinking it
        filler.unlink()
        reserve.unlink()
        freed_at = time.monotonic()
        wait_until(lambda: mta.codes_since(freed_at).count(250) >= 10, timeout=180,
                   what="mail accepted again after space was freed", log=daemon.output)
        mta.drain(log=daemon.output)
        pipe_freed = run_cli(config, "ingest", stdin=piped)
        assert daemon.stop() == 0
        acked = mta.acked_set() | {"<piped-full@customer.example>"}
        intake = intake_check(config, acked)
        summary("outage/disk-full", mails=len(mta.offered), acked=len(acked), answers_while_full=dict(Counter(during)),
                pipe_exit_while_full=pipe_full.code, lost=len(intake.lost), doubled=len(intake.doubled),
                seconds=elapsed())
    assert alive_when_full, "serve must survive a full disk"
    temporary_only([code for _, code, _, _ in mta.answers])
    # 75 (try later), or 0 when SQLite still found room in the WAL file it had already grown (the disk is
    # full, its own file is not); either way the mail is not lost, which intake_check above holds to
    assert pipe_full.code in (0, 75), f"pipe on a full disk: exit {pipe_full.code}: {pipe_full.stderr[-2000:]}"
    assert pipe_freed.code == 0, pipe_freed.stderr
    assert not intake.lost, f"acknowledged but lost: {sorted(intake.lost)[:5]}"
    assert not intake.doubled and not intake.ticket_doubled and intake.tickets == len(acked)

