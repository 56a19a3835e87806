"""The IMAP watchdog on a real database, real templates and a movable clock (no IMAP server needed).

The poller fills ``MailboxHealth``; here the tests fill it the same way and
check which incidents become alerts, that each incident is reported exactly
once (outbox dedupe key), and how the OAuth2 token expiry is read.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailgate.clock import FixedClock
from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.intake.imap_watchdog import MailboxHealth, MailboxWatchdog
from mailgate.pipeline.ingest import Context
from mailgate.storage.model import Outbox
from tests.conftest import MakeConfig

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)  # the real "now": token files carry real mtimes


@pytest.fixture
def watchdog_for(make_config: MakeConfig, clock: FixedClock) -> Iterator[Callable[..., MailboxWatchdog]]:
    contexts: list[Context] = []

    def make(admin: str | None = "admin@example.com", **mailbox: Any) -> MailboxWatchdog:
        box = {"name": "support", "host": "imap.example.com", "username": "support@example.com",
               "password": "x", **mailbox}  # fmt: skip
        extra = {"admin_email": admin} if admin else {}
        ctx = build_context(load_config(make_config(intake={"imap": [box]}, **extra)), clock)
        ctx.db.upgrade()
        contexts.append(ctx)
        return MailboxWatchdog(ctx.config.main.intake.imap[0], MailboxHealth(), lambda: ctx)

    yield make
    for ctx in contexts:
        ctx.db.dispose()


def alerts(dog: MailboxWatchdog) -> list[Outbox]:
    with dog._context().db.reader() as session:  # the watchdog's own context: the same database
        return list(session.scalars(select(Outbox).where(Outbox.kind == "admin_alert").order_by(Outbox.id)))


def test_failing_mailbox_alerts_once_per_incident(watchdog_for: Callable[..., MailboxWatchdog],
                                                  clock: FixedClock) -> None:  # fmt: skip
    dog = watchdog_for(watchdog={"failing_after": "15m"})
    dog.health.failing_since = NOW - timedelta(minutes=10)
    dog.health.last_error = "login as support@example.com refused by imap.example.com:993: bad password"
    assert dog.check() == [] and alerts(dog) == []
    clock.advance(timedelta(minutes=6))
    assert [a.kind for a in dog.check()] == ["failing"]
    clock.advance(timedelta(minutes=30))
    dog.check()  # still the same incident
    [row] = alerts(dog)
    assert row.dedupe_key == f"admin_alert:support:failing:{(NOW - timedelta(minutes=10)).isoformat()}"
    assert row.recipients == ["admin@example.com"] and row.ticket_id is None and row.status == "pending"
    assert row.subject == "[mailgate] support: IMAP intake failing"
    assert "bad password" in row.text and "bad password" in (row.html or "")
    assert row.headers["Auto-Submitted"] == "auto-generated"

    dog.health.failing_since = None  # recovered ... and broke again: a new incident, a new mail
    assert dog.check() == []
    dog.health.failing_since = clock.now()
    clock.advance(timedelta(minutes=20))
    dog.check()
    assert len(alerts(dog)) == 2

    again = MailboxWatchdog(dog.mailbox, dog.health, dog._context)  # a restarted daemon does not repeat it
    again.check()
    assert len(alerts(dog)) == 2


def test_quiet_period_and_stuck_mail(watchdog_for: Callable[..., MailboxWatchdog], clock: FixedClock) -> None:
    dog = watchdog_for(poll_interval="1m", watchdog={"quiet_period": "2d"})
    dog.health.last_mail_at = NOW - timedelta(days=1)
    dog.health.waiting, dog.health.waiting_since = 2, NOW - timedelta(minutes=2)
    assert dog.check() == []  # stuck_after defaults to three poll intervals
    clock.advance(timedelta(days=1, minutes=1))
    assert sorted(a.kind for a in dog.check()) == ["quiet", "stuck"]
    stuck = next(r for r in alerts(dog) if ":stuck:" in r.dedupe_key)
    assert "2 message(s)" in stuck.text and "INBOX" in stuck.text


def test_quiet_period_starts_with_the_last_stored_mail_or_the_start(
    watchdog_for: Callable[..., MailboxWatchdog], clock: FixedClock
) -> None:
    dog = watchdog_for(watchdog={"quiet_period": "1h"})
    assert dog.check() == []  # nothing stored yet: counted from the start of the watchdog
    assert dog.health.last_mail_at == NOW
    clock.advance(timedelta(hours=1))
    assert [a.kind for a in dog.check()] == ["quiet"]


def test_token_file_json_expires_at(watchdog_for: Callable[..., MailboxWatchdog], clock: FixedClock,
                                    tmp_path: Path) -> None:  # fmt: skip
    token = tmp_path / "token.json"
    token.write_text(json.dumps({"access_token": "t0k", "expires_at": (NOW + timedelta(hours=1)).timestamp()}))
    dog = watchdog_for(password=None, oauth2_token_file=str(token), watchdog={"token_warn_before": "10m"})
    assert dog.check() == []
    clock.advance(timedelta(minutes=51))
    [alert] = dog.check()
    assert alert.kind == "token_expiry" and alert.since == NOW + timedelta(hours=1)
    token.write_text(json.dumps({"access_token": "t1k", "expires_at": (NOW + timedelta(hours=2)).isoformat()}))
    assert dog.check() == []  # refreshed in time
    clock.advance(timedelta(hours=1))
    dog.check()
    keys = [r.dedupe_key for r in alerts(dog)]
    assert len(keys) == 2 and all(":token_expiry:" in k for k in keys)


def test_plain_token_file_uses_mtime_plus_lifetime(watchdog_for: Callable[..., MailboxWatchdog],
                                                   tmp_path: Path) -> None:  # fmt: skip
    token = tmp_path / "token"
    token.write_text("ya29.raw-token\n")
    old = NOW.timestamp() - 55 * 60
    os.utime(token, (old, old))
    dog = watchdog_for(password=None, oauth2_token_file=str(token), watchdog={"token_lifetime": "1h"})
    [alert] = dog.check()
    assert alert.kind == "token_expiry"
    assert alert.since == datetime.fromtimestamp(old + 3600, UTC)
    os.utime(token, None)  # the refresher ran
    assert watchdog_for(password=None, oauth2_token_file=str(token)).check() == []


def test_without_admin_email_the_alert_is_logged_once(
    watchdog_for: Callable[..., MailboxWatchdog], caplog: pytest.LogCaptureFixture
) -> None:
    dog = watchdog_for(admin=None, watchdog={"failing_after": "1m"})
    dog.health.failing_since, dog.health.last_error = NOW - timedelta(minutes=5), "cannot reach imap.example.com"
    with caplog.at_level(logging.WARNING, logger="mailgate.intake.imap_watchdog"):
        dog.check()
        dog.check()
    lines = [r.fields for r in caplog.records if r.getMessage() == "imap alert"]  # type: ignore[attr-defined]
    assert len(lines) == 1 and "no admin_email configured" in lines[0]["mailed_to"]
    assert alerts(dog) == []
