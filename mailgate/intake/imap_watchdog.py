"""Watchdog per IMAP mailbox: silently dead intake is the failure help desks fear most, so say it out loud.

Four conditions, each an *incident* identified by when it started:

* ``failing``: connecting or logging in has failed for ``failing_after``
  (incident start: the first failure of the streak);
* ``quiet``: no mail arrived for ``quiet_period`` (off unless configured;
  start: the last mail, from the database at startup);
* ``stuck``: mail has been waiting in the watched folder, seen but not stored
  and acknowledged, for ``stuck_after`` (default three poll intervals; start:
  when the poller first saw the oldest waiting mail);
* ``token_expiry``: the OAuth2 token file expires within ``token_warn_before``
  (start: the expiry time, from ``expires_at`` in a JSON token file or else
  the file's mtime + ``token_lifetime``). A token command is not watched: it
  is run at every login, and a failure there is a ``failing`` incident.

An alert is one log line plus one mail to ``admin_email`` through the outbox,
written in a transaction with the dedupe key
``admin_alert:<mailbox>:<kind>:<incident start>``, so each incident is
reported once, also across restarts and by several daemons.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import make_msgid

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from mailgate.config import ImapMailbox
from mailgate.errors import TempFail
from mailgate.intake.imap_session import token_expiry
from mailgate.intake.worker import Worker
from mailgate.logformat import log_event
from mailgate.pipeline.ingest import Context
from mailgate.storage.model import Inbound, Outbox
from mailgate.storage.store import Store

log = logging.getLogger(__name__)


@dataclass
class MailboxHealth:
    """What the poller knows about its mailbox, read by the watchdog (plain attributes; the GIL suffices)."""

    failing_since: datetime | None = None
    last_error: str | None = None
    last_mail_at: datetime | None = None
    waiting_since: datetime | None = None  # oldest mail seen in the folder but not yet acknowledged
    waiting: int = 0
    last_success_at: float | None = None  # time.time() of the last round that reached the server (metrics)


@dataclass(frozen=True)
class Alert:
    kind: str  # failing | quiet | stuck | token_expiry | unfetched
    since: datetime
    title: str
    detail: str
    incident: str | None = None  # what names the incident in its dedupe key; default: when it started

    def key(self, mailbox: str) -> str:
        return f"admin_alert:{mailbox}:{self.kind}:{self.incident or self.since.isoformat(timespec='seconds')}"


def _ago(delta: timedelta) -> str:
    if delta < timedelta(minutes=1):
        return f"{int(delta.total_seconds())} s"
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def due_alerts(mb: ImapMailbox, health: MailboxHealth, now: datetime, token_expires: datetime | None) -> list[Alert]:
    """Which incidents are open now (pure)."""
    wd, alerts = mb.watchdog, []
    where = f"{mb.username} on {mb.host}:{mb.port}, folder {mb.folder}"
    if health.failing_since is not None and now - health.failing_since >= wd.failing_after:
        alerts.append(
            Alert(
                "failing",
                health.failing_since,
                "IMAP intake failing",
                f"Mailbox {mb.name} ({where}) has been failing for {_ago(now - health.failing_since)}. "
                f"Last error: {health.last_error}. Mail stays on the server and is fetched once "
                f"the problem is fixed.",
            )
        )
    if wd.quiet_period and health.last_mail_at is not None and now - health.last_mail_at >= wd.quiet_period:
        alerts.append(
            Alert(
                "quiet",
                health.last_mail_at,
                "no mail arrived",
                f"No mail has arrived in mailbox {mb.name} ({where}) for "
                f"{_ago(now - health.last_mail_at)} (quiet_period {wd.quiet_period}). "
                f"Check that mail is still delivered to this mailbox.",
            )
        )
    if health.waiting_since is not None and now - health.waiting_since >= mb.stuck_after:
        alerts.append(
            Alert(
                "stuck",
                health.waiting_since,
                "mail stuck in the folder",
                f"{health.waiting} message(s) in mailbox {mb.name} ({where}) have been waiting for "
                f"{_ago(now - health.waiting_since)} without being stored and moved. "
                f"Last error: {health.last_error or 'see the log'}.",
            )
        )
    if token_expires is not None and token_expires - now <= wd.token_warn_before:
        state = "expired" if token_expires <= now else "expires"
        alerts.append(
            Alert(
                "token_expiry",
                token_expires,
                "OAuth2 token about to expire",
                f"The OAuth2 token for mailbox {mb.name} in {mb.oauth2_token_file} {state} at "
                f"{token_expires.isoformat(timespec='seconds')}. The tool that refreshes it may "
                f"have stopped; after expiry, logins fail.",
            )
        )
    return alerts


def record_alert(ctx: Context, mailbox: ImapMailbox, alert: Alert) -> bool:
    """Write the admin's mail to the outbox once per incident; True when this call recorded it."""
    main = ctx.config.main
    if main.admin_email is None:
        return True
    key = alert.key(mailbox.name)
    now = ctx.clock.now()
    context = {
        "alert": {
            "kind": alert.kind,
            "title": alert.title,
            "detail": alert.detail,
            "mailbox": mailbox.name,
            "since": alert.since.isoformat(timespec="seconds"),
            "host": mailbox.host,
            "folder": mailbox.folder,
        }
    }
    try:
        with ctx.db.transaction() as session:
            if Store(session).outbox_key_exists(key):
                return False
            rendered = ctx.templates.render("admin_alert", context)
            session.add(
                Outbox(
                    dedupe_key=key,
                    ticket_id=None,
                    kind="admin_alert",
                    mail_from=main.outbound.from_,
                    recipients=[main.admin_email],
                    message_id=make_msgid(domain=ctx.identity.domain),
                    subject=rendered.subject,
                    headers={"Auto-Submitted": "auto-generated"},
                    text=rendered.text,
                    html=rendered.html,
                    status="pending",
                    attempts=0,
                    created_at=now,
                    next_attempt_at=now,
                )
            )
    except IntegrityError:  # another daemon recorded the same incident first
        return False
    return True


def last_mail_at(ctx: Context, mailbox: str) -> datetime | None:
    with ctx.db.reader() as session:
        return session.scalar(select(func.max(Inbound.received_at)).where(Inbound.mailbox == mailbox))


class MailboxWatchdog(Worker):
    """Checks one mailbox's health every ``watchdog.check_interval`` in its own thread."""

    def __init__(self, mailbox: ImapMailbox, health: MailboxHealth, context: Callable[[], Context]) -> None:
        self.mailbox = mailbox
        self.health = health
        self._context = context
        self._fired: set[str] = set()
        self._started = context().clock.now()
        super().__init__(f"mailgate-watchdog-{mailbox.name}")

    def _run(self) -> None:
        while not self._stop.wait(self.mailbox.watchdog.check_interval.total_seconds()):
            try:
                self.check()
            except (TempFail, DBAPIError) as exc:  # the database is down: the poller says so too; try again
                log.warning("imap %s: watchdog check skipped: %s", self.mailbox.name, " ".join(str(exc).split())[:200])
            except Exception:  # never let the watchdog die of its own bug; try again next interval
                log.exception("imap %s: watchdog check failed", self.mailbox.name)

    def check(self) -> list[Alert]:
        mb, ctx = self.mailbox, self._context()
        if self.health.last_mail_at is None:
            self.health.last_mail_at = last_mail_at(ctx, mb.name) or self._started
        lifetime = mb.watchdog.token_lifetime.total_seconds() if mb.watchdog.token_lifetime else None
        expires = token_expiry(mb.oauth2_token_file, lifetime) if mb.oauth2_token_file else None
        alerts = due_alerts(mb, self.health, ctx.clock.now(), expires)
        for alert in alerts:
            key = alert.key(mb.name)
            if key in self._fired:
                continue
            if record_alert(ctx, mb, alert):
                to = ctx.config.main.admin_email
                log_event(log, "imap alert", logging.WARNING, mailbox=mb.name, kind=alert.kind, detail=alert.detail,
                          mailed_to=to or "nobody (no admin_email configured)")
            self._fired.add(key)
        return alerts
