"""IMAP intake: one thread per mailbox hands raw mail to the same pipeline and acknowledges only after commit.

A round: SELECT the folder, compare UIDVALIDITY with the checkpoint in
``mailbox_state``, find the waiting UIDs, FETCH them with ``BODY.PEEK[]`` in
batches (so nothing is marked seen early), submit each mail to the group-commit
writer and wait for the commit, then acknowledge on the server:

* ``processed_folder`` set: MOVE there (COPY + ``\\Deleted`` + UID EXPUNGE when
  the server lacks MOVE). Everything still in the folder is waiting, so a
  crash between commit and move only means a re-fetch, which dedupe stores once.
* ``processed_folder`` omitted ("leave in place"): flag ``\\Seen`` and advance
  ``last_uid``; only UIDs above it are fetched, so flagged or human-read mail
  is never taken twice. ``last_uid`` stops below the first mail that could not
  be stored, so that one is retried.

Quarantined and policy-rejected mail goes to ``quarantine_folder`` when set.
A temporary failure (database down) leaves the mail in place and the round is
retried with a growing delay. A new UIDVALIDITY resets ``last_uid`` to 0: the
folder is rescanned and dedupe recognises what was already stored.

Between rounds the thread IDLEs (re-issued every ``idle_timeout``, under the 29
minutes of RFC 2177; ``idle_check`` ticks every second so a stop request is
seen at once) or polls every ``poll_interval``. Connection trouble reconnects
with exponential backoff and jitter; a refused login backs off from 30 s to
30 min so a wrong password never hammers the server or locks the account.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime

from imapclient import FLAGGED, SEEN, IMAPClient
from imapclient.exceptions import IMAPClientError
from sqlalchemy.exc import DBAPIError

from mailgate.config import ImapMailbox
from mailgate.domain import Envelope, Outcome
from mailgate.errors import LeaseLost, TempFail
from mailgate.intake import imap_session
from mailgate.intake.imap_session import ensure_folder, envelope_for, exists_reported, fetch_batches, finish_messages
from mailgate.intake.imap_watchdog import Alert, MailboxHealth, MailboxWatchdog, record_alert
from mailgate.intake.worker import Worker
from mailgate.logformat import FIELDS, log_event
from mailgate.pipeline import unfetched
from mailgate.pipeline.ingest import Context, fence
from mailgate.pipeline.unfetched import HEAD_BYTES, Unfetched
from mailgate.pipeline.unfetched import Recorded as RecordedUnfetched
from mailgate.storage.db import is_transient
from mailgate.storage.leases import Lease
from mailgate.storage.model import MailboxState
from mailgate.storage.store import Store

log = logging.getLogger(__name__)
ilog = logging.getLogger("mailgate.intake")  # where every source's "mail received" lines go

Result = Outcome | TempFail
Submit = Callable[[bytes, Envelope], "Future[Result]"]

IDLE_TICK = 1.0  # seconds per idle_check: how quickly a stop request is noticed
FETCH_ATTEMPTS = 3  # rounds a mail the server will not hand over is retried before it is set aside
MAX_BATCH_BYTES = 32 * 2**20  # one FETCH never holds more than this (a single bigger mail goes alone)
BACKOFF = {"connect": (1.0, 300.0), "login": (30.0, 1800.0)}  # first and maximum delay, seconds


def backoff_delay(kind: str, failures: int, rng: Callable[[float, float], float] = random.uniform) -> float:
    first, maximum = BACKOFF[kind]
    return float(min(first * 2 ** max(0, failures - 1), maximum) * rng(0.8, 1.2))


@dataclass
class _Round:
    new: int = 0  # UIDs seen for the first time in this round
    left: set[int] = field(default_factory=set)  # left in place, to retry
    problem: str | None = None  # why, for the watchdog's alert


def load_state(ctx: Context, name: str) -> tuple[int | None, int]:
    with ctx.db.reader() as session:
        row = session.get(MailboxState, name)
        return (row.uidvalidity, row.last_uid) if row else (None, 0)


def save_state(
    ctx: Context, name: str, *, uidvalidity: int | None = None, last_uid: int | None = None, error: str | None = None
) -> None:
    now = ctx.clock.now()
    with ctx.db.transaction() as session:
        row = session.get(MailboxState, name)
        if row is None:
            row = MailboxState(name=name, last_uid=0)
            session.add(row)
        row.updated_at = now
        if error is not None:
            row.last_error = error[:2000]
            return
        if uidvalidity is not None:
            row.uidvalidity = uidvalidity
        if last_uid is not None:
            row.last_uid = last_uid
        row.last_success_at, row.last_error = now, None


def _runs(uids: Sequence[int], test: Callable[[int], bool]) -> Iterator[tuple[bool, list[int]]]:
    """Consecutive UIDs grouped by ``test``, in order (so the checkpoint only ever moves forward)."""
    for key, group in itertools.groupby(uids, key=test):
        yield key, list(group)


def record_unfetched(ctx: Context, mail: Unfetched, envelope: Envelope) -> RecordedUnfetched:
    """The record of a mail not fetched, in a transaction of its own, fenced by the mailbox lease."""
    try:
        with ctx.db.transaction() as session:
            fence(session, envelope, {})
            return unfetched.record(Store(session), mail, envelope)
    except DBAPIError as exc:
        if is_transient(exc):
            raise TempFail(f"database unavailable: {exc.orig or exc}") from exc
        raise


class MailboxPoller(Worker):
    """The thread that owns one mailbox's connection."""

    def __init__(
        self,
        mailbox: ImapMailbox,
        context: Callable[[], Context],
        submit: Submit,
        health: MailboxHealth | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.health = health or MailboxHealth()
        self.lease = lease
        self.lost = False  # stopped because the lease ran out: the mailbox is another daemon's now
        self._context = context
        self._submit = submit
        super().__init__(f"mailgate-imap-{mailbox.name}")
        self._failures = 0
        self._retry_delay = 0.0
        self._uidvalidity: int | None = None
        self._last_uid = 0
        self._first_seen: dict[int, datetime] = {}
        self._left: set[int] = set()  # this round's mail left in place: the checkpoint stays below it
        self._fetch_failures: dict[int, int] = {}  # UID -> rounds in which the server would not hand it over
        self._peer = f"{mailbox.host}:{mailbox.port}"

    # ---------------------------------------------------------------- lifecycle (start/stop: Worker)
    def _run(self) -> None:
        name = self.mailbox.name
        log_event(log, "imap watching", mailbox=name, folder=self.mailbox.folder, server=self._peer,
                  user=self.mailbox.username)
        while not self._stop.is_set():
            client: IMAPClient | None = None
            delay = 0.0
            try:
                self._check_lease()
                client = imap_session.connect(self.mailbox)
                self._session(client)
            except LeaseLost as exc:
                self.lost = True
                log_event(log, "imap lease lost", logging.WARNING, mailbox=name, reason=str(exc),
                          token=self.lease.token if self.lease else None)
                return
            except Exception as exc:
                delay = self._failed(exc)
            finally:
                if client is not None:
                    imap_session.close(client, logout=True)
            self._stop.wait(delay)
        log_event(log, "imap stopped", mailbox=name)

    def _check_lease(self) -> None:
        """Fencing on our side: past the lease's local deadline this daemon must not touch the mailbox."""
        if self.lease is not None and not self.lease.valid():
            raise LeaseLost(f"lease on {self.mailbox.name} (token {self.lease.token}) not renewed in time")

    def _acting(self, uids: Sequence[int]) -> None:
        """Right before a command that acknowledges mail on the server (MOVE, EXPUNGE, \\Seen): the last
        look at the lease, and a line that says under which token it was sent (at debug level)."""
        self._check_lease()
        if self.lease is not None:
            log_event(log, "imap acknowledging", logging.DEBUG, mailbox=self.mailbox.name, mails=len(uids),
                      token=self.lease.token)

    def _failed(self, exc: BaseException) -> float:
        mb, health = self.mailbox, self.health
        ctx = self._context()
        self._failures += 1
        kind = "login" if imap_session.is_auth_failure(exc) else "connect"
        delay = backoff_delay(kind, self._failures)
        message = imap_session.describe(mb, exc)
        health.last_error = message
        if health.failing_since is None:
            health.failing_since = ctx.clock.now()
        unexpected = not isinstance(exc, OSError | IMAPClientError | TempFail | imap_session.CredentialError)
        if log.isEnabledFor(logging.WARNING):
            log.warning("imap failing", exc_info=unexpected, extra={FIELDS: {
                "mailbox": mb.name, "error": message, "retry_in": f"{delay:.0f}s", "failures": self._failures,
                "since": health.failing_since.isoformat(timespec="seconds")}})
        try:
            save_state(ctx, mb.name, error=message)
        except Exception as db_exc:  # the database may be the thing that is down
            log.debug("imap %s: could not record the error: %r", mb.name, db_exc)
        return delay

    def _healthy(self) -> None:
        self.health.last_success_at = time.time()
        if self._failures:
            log_event(log, "imap working again", mailbox=self.mailbox.name, failures=self._failures)
        self._failures = 0
        self.health.failing_since = None
        self.health.last_error = None

    # ------------------------------------------------------------------ session
    def _session(self, client: IMAPClient) -> None:
        mb = self.mailbox
        caps = {c.upper() for c in client.capabilities()}
        use_idle = mb.idle and b"IDLE" in caps
        use_move = b"MOVE" in caps
        for folder in (mb.processed_folder, mb.quarantine_folder):
            try:
                if folder:
                    ensure_folder(client, folder)
            except IMAPClient.AbortError:
                raise
            except IMAPClientError as exc:  # retried at every move; meanwhile the mail waits in place
                log.warning("imap %s: cannot create folder %s: %s", mb.name, folder, exc)
        self._uidvalidity, self._last_uid = load_state(self._context(), mb.name)
        while not self._stop.is_set():
            result = self._round(client, use_move)
            self._healthy()
            self.health.last_error = result.problem
            if self._stop.is_set():
                return
            if result.left:
                self._retry_delay = min(max(2.0, self._retry_delay * 2), mb.poll_interval.total_seconds(), 300.0)
                self._wait(client, use_idle, self._retry_delay)
            elif result.new:
                self._retry_delay = 0.0
                continue  # more may have arrived while we worked; IDLE would not report it again
            else:
                self._retry_delay = 0.0
                timeout = mb.idle_timeout if use_idle else mb.poll_interval
                self._wait(client, use_idle, timeout.total_seconds())

    def _wait(self, client: IMAPClient, use_idle: bool, seconds: float) -> None:
        if not use_idle:
            self._stop.wait(seconds)
            return
        sock = client.socket()
        read_timeout = self.mailbox.timeout.total_seconds()
        if exists_reported(client):
            return
        client.idle()
        deadline = time.monotonic() + seconds
        quick_empties = 0
        try:
            while not exists_reported(client) and not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                responses = client.idle_check(timeout=min(IDLE_TICK, max(0.0, deadline - started)))
                sock.settimeout(read_timeout)  # idle_check leaves the socket without a timeout
                if any(len(r) > 1 and r[0] == b"BYE" for r in responses):
                    raise IMAPClient.AbortError(f"server said BYE: {responses[0]!r}")
                if any(len(r) > 1 and r[1] == b"EXISTS" for r in responses):
                    return
                # poll() says readable but no line arrives: the server closed the connection (EOF)
                quick_empties = quick_empties + 1 if not responses and time.monotonic() - started < 0.05 else 0
                if quick_empties >= 5:
                    raise IMAPClient.AbortError("EOF while idling")
        finally:
            sock.settimeout(read_timeout)
            client.idle_done()

    # -------------------------------------------------------------------- round
    def _round(self, client: IMAPClient, use_move: bool) -> _Round:
        mb, ctx = self.mailbox, self._context()
        self._check_lease()
        uidvalidity = int(client.select_folder(mb.folder)[b"UIDVALIDITY"])
        if uidvalidity != self._uidvalidity:
            if self._uidvalidity is not None:
                log.warning(
                    "imap %s: UIDVALIDITY of %s changed from %s to %s; rescanning the folder from UID 1 "
                    "(mail already stored is recognised as duplicate)",
                    mb.name,
                    mb.folder,
                    self._uidvalidity,
                    uidvalidity,
                )
            self._uidvalidity, self._last_uid = uidvalidity, 0
            self._first_seen.clear()
            save_state(ctx, mb.name, uidvalidity=uidvalidity, last_uid=0)
        exists_reported(client)  # this search sees all mail announced so far; later EXISTS mean another round
        if mb.processed_folder:
            uids = sorted(client.search(["NOT", "DELETED"]))
        else:
            uids = sorted(u for u in client.search(["UID", f"{self._last_uid + 1}:*"]) if u > self._last_uid)
        now = ctx.clock.now()
        result = _Round(new=sum(1 for u in uids if u not in self._first_seen))
        for uid in uids:
            self._first_seen.setdefault(uid, now)
        for gone in set(self._first_seen) - set(uids):
            del self._first_seen[gone]
        self._left = result.left
        if uids:
            sizes = {u: int(d.get(b"RFC822.SIZE", 0)) for u, d in client.fetch(uids, ["RFC822.SIZE"]).items()}
            limit = mb.max_message_size
            for too_big, run in _runs(uids, lambda u: sizes.get(u, 0) > limit):
                if self._stop.is_set():
                    result.left.update(u for u in uids if u >= run[0])
                    break
                if too_big:
                    reasons = {u: f"too large: {sizes[u]} bytes, over the mailbox's max_message_size of {limit}"
                               for u in run}
                    result.problem = self._unfetched(client, reasons, sizes, use_move) or result.problem
                    continue
                for chunk in fetch_batches(run, sizes, mb.batch_size, MAX_BATCH_BYTES):
                    if self._stop.is_set():
                        result.left.update(u for u in uids if u >= chunk[0])
                        break
                    left, problem = self._batch(client, chunk, use_move, sizes)
                    result.left.update(left)
                    result.problem = problem or result.problem
        waiting = [self._first_seen[u] for u in result.left if u in self._first_seen]
        self.health.waiting = len(waiting)
        self.health.waiting_since = min(waiting) if waiting else None
        return result

    def _batch(
        self, client: IMAPClient, uids: list[int], use_move: bool, sizes: dict[int, int]
    ) -> tuple[set[int], str | None]:
        """Fetch, store (waiting for the commit), acknowledge; returns the UIDs left in place, and why."""
        mb, ctx = self.mailbox, self._context()
        bodies, broken = self._fetch(client, uids)
        pending: list[tuple[int, Future[Result]]] = []
        for uid, raw in bodies.items():
            envelope = envelope_for(raw, mb.name, ctx.clock.now(), self._peer)
            if self.lease is not None:
                envelope = replace(envelope, lease_token=self.lease.token)
            pending.append((uid, self._submit(raw, envelope)))
        done: list[int] = []
        quarantine: list[int] = []
        counts: dict[str, int] = {}
        left, given_up, problem = self._set_aside(broken)
        outcomes = [(uid, future.result()) for uid, future in pending]
        if any(isinstance(outcome, LeaseLost) for _, outcome in outcomes):
            raise LeaseLost(f"the database fenced off mail of {mb.name} fetched under token "
                            f"{self.lease.token if self.lease else None}")
        self._check_lease()  # committed under our lease; moving it must happen under it too
        for uid, outcome in outcomes:
            status = "tempfail" if isinstance(outcome, TempFail) else outcome.status
            counts[status] = counts.get(status, 0) + 1
            if isinstance(outcome, TempFail):
                left.add(uid)
                problem = f"could not store: {outcome}"
            elif status in ("quarantined", "rejected") and mb.quarantine_folder:
                quarantine.append(uid)
            else:
                done.append(uid)
        if counts.keys() - {"duplicate", "tempfail"}:
            self.health.last_mail_at = ctx.clock.now()
        for folder, acked in ((mb.processed_folder, done), (mb.quarantine_folder, quarantine)):
            unmoved = finish_messages(client, acked, folder, use_move=use_move, before=self._acting) if folder else []
            left.update(unmoved)
            problem = f"could not move {len(unmoved)} message(s) to {folder} (see the log)" if unmoved else problem
        if not mb.processed_folder and done:
            self._acting(done)
            client.add_flags(done, [SEEN], silent=True)
        if given_up:
            problem = self._unfetched(client, given_up, sizes, use_move) or problem
        self._advance(uids, left)
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        log.info(
            "imap %s: %d fetched (%s)%s%s",
            mb.name,
            len(pending),
            summary or "none",
            f"; {len(left)} left in place for a retry" if left else "",
            f"; lease token {self.lease.token}" if self.lease else "",
        )
        return left, problem

    def _fetch(self, client: IMAPClient, uids: list[int]) -> tuple[dict[int, bytes], dict[int, str]]:
        """The mails' bytes, and for each mail the server would not hand over, its answer. A refused
        FETCH of several mails is retried one by one, to find the mail it fails on."""
        try:
            fetched = client.fetch(uids, ["BODY.PEEK[]"])
        except IMAPClient.AbortError:
            raise
        except IMAPClientError as exc:
            if len(uids) == 1:
                return {}, {uids[0]: f"the server refused to fetch it: {exc}"}
            bodies: dict[int, bytes] = {}
            broken: dict[int, str] = {}
            for uid in uids:
                one, why = self._fetch(client, [uid])
                bodies |= one
                broken |= why
            return bodies, broken
        bodies, broken = {}, {}
        for uid in uids:
            raw = fetched.get(uid, {}).get(b"BODY[]")
            if raw is None:
                broken[uid] = "the server sent no content for it"
            else:
                bodies[uid] = raw
                self._fetch_failures.pop(uid, None)
        return bodies, broken

    def _set_aside(self, broken: dict[int, str]) -> tuple[set[int], dict[int, str], str | None]:
        """Mail the server would not hand over: retried for FETCH_ATTEMPTS rounds, then set aside (so it
        blocks nothing behind it). Returns the UIDs left for a retry, those given up on, and why."""
        left: set[int] = set()
        given_up: dict[int, str] = {}
        problem = None
        for uid, why in broken.items():
            self._fetch_failures[uid] = self._fetch_failures.get(uid, 0) + 1
            if self._fetch_failures[uid] >= FETCH_ATTEMPTS:
                given_up[uid] = f"could not be fetched ({FETCH_ATTEMPTS} attempts): {why}"
            else:
                left.add(uid)
                problem = f"could not fetch a message (attempt {self._fetch_failures[uid]}): {why}"
        return left, given_up, problem

    def _unfetched(
        self, client: IMAPClient, reasons: dict[int, str], sizes: dict[int, int], use_move: bool
    ) -> str | None:
        """Mail not to be fetched (too large, or the server fails on it): record it from its header, tell
        the admin once, and move it out of the way so that the mail behind it is fetched.

        Without a quarantine folder it goes to the processed folder, or (leave-in-place mode) is flagged
        \\Seen and \\Flagged and the checkpoint passes it. Returns the round's problem, if the record or
        the move failed (the mail then waits, and is retried)."""
        mb, ctx = self.mailbox, self._context()
        uids = sorted(reasons)
        heads = client.fetch(uids, [f"BODY.PEEK[HEADER]<0.{HEAD_BYTES}>"])
        where = mb.quarantine_folder or mb.processed_folder
        left_in = (f"folder {where} of mailbox {mb.name}" if where else
                   f"folder {mb.folder} of mailbox {mb.name}, flagged \\Seen and \\Flagged")
        present: list[int] = []
        problem = None
        for uid in uids:
            if uid not in heads:  # expunged meanwhile (a person, another client): nothing to record
                self._fetch_failures.pop(uid, None)
                continue
            head = next((v for k, v in heads[uid].items() if k.startswith(b"BODY[HEADER]")), None) or b""
            where_now = f"{mb.name}\0{self._uidvalidity}\0{uid}".encode()
            mail = Unfetched(bytes(head), sizes.get(uid, 0), reasons[uid], left_in, where_now)
            envelope = envelope_for(b"", mb.name, ctx.clock.now(), self._peer)
            if self.lease is not None:
                envelope = replace(envelope, lease_token=self.lease.token)
            started = time.monotonic()
            try:
                recorded = record_unfetched(ctx, mail, envelope)
            except (TempFail, DBAPIError) as exc:
                self._left.add(uid)
                problem = f"could not record a message that is not fetched: {exc}"
                continue
            present.append(uid)
            self._fetch_failures.pop(uid, None)
            if recorded.new:
                log_event(ilog, "mail received", logging.WARNING, outcome="quarantined", source="imap",
                          mailbox=mb.name, id=recorded.inbound_id, message_id=recorded.fields.get("message-id"),
                          mail_from=recorded.fields.get("from"), size=mail.size,
                          ms=round((time.monotonic() - started) * 1000, 1), reason=mail.reason, left_in=left_in)
            self._alert(ctx, recorded, mail)  # also for a record seen again: a crash may have come between
        if not present:
            return problem
        self._check_lease()
        if where:
            unmoved = finish_messages(client, present, where, use_move=use_move, before=self._acting)
            self._left.update(unmoved)
            if unmoved:
                return f"could not move {len(unmoved)} message(s) to {where} (see the log)"
        else:
            self._acting(present)
            client.add_flags(present, [SEEN, FLAGGED], silent=True)
        self._advance(present, set())
        return problem

    def _alert(self, ctx: Context, recorded: RecordedUnfetched, mail: Unfetched) -> None:
        mb, fields = self.mailbox, recorded.fields
        detail = (f"A mail in {mb.folder} was not fetched: {mail.reason}. It was kept in quarantine as "
                  f"#{recorded.inbound_id} and now waits in {mail.left_in}; the mail behind it is fetched as usual. "
                  f"From: {fields.get('from') or '-'}; Subject: {fields.get('subject') or '-'}; "
                  f"Message-ID: {fields.get('message-id') or '-'}. `mailgate explain {recorded.inbound_id}` shows "
                  f"the record.")
        alert = Alert("unfetched", ctx.clock.now(), "a mail was not fetched", detail,
                      incident=f"inbound-{recorded.inbound_id}")
        try:
            if record_alert(ctx, mb, alert):
                log_event(log, "imap alert", logging.WARNING, mailbox=mb.name, kind=alert.kind, detail=detail,
                          mailed_to=ctx.config.main.admin_email or "nobody (no admin_email configured)")
        except (TempFail, DBAPIError) as exc:  # the record is kept; the alert is what is lost, said here
            log.warning("imap %s: could not queue the alert for #%s: %s", mb.name, recorded.inbound_id, exc)

    def _advance(self, uids: Iterable[int], left: set[int]) -> None:
        """Checkpoint: the highest UID below which everything is acknowledged (this round's
        mail left in place included, so a later batch never moves the checkpoint past it)."""
        last = self._last_uid
        floor = min(left | self._left, default=None)
        for uid in sorted(uids):
            if uid in left or (floor is not None and uid > floor):
                break
            last = uid
        if last != self._last_uid:
            self._last_uid = last
            save_state(self._context(), self.mailbox.name, uidvalidity=self._uidvalidity, last_uid=last)


class ImapIntake:
    """The mailbox pollers (and their watchdogs) of one ``serve``: those whose lease it holds.

    The coordinator (``daemon/coordinator.py``) says which mailboxes to watch, each with its lease;
    a changed setting or a new lease restarts only that mailbox's poller.
    """

    def __init__(self, context: Callable[[], Context], submit: Submit) -> None:
        self._context = context
        self._submit = submit
        self._lock = threading.Lock()
        self._running: dict[str, tuple[ImapMailbox, MailboxPoller, MailboxWatchdog]] = {}
        self._closed = False

    def watch(self, wanted: dict[str, tuple[ImapMailbox, Lease | None]], stop_timeout: float = 30.0) -> None:
        """``stop_timeout``: how long to wait for each poller that must stop (one still busy past it ends
        on its own: its lease is gone, so it cannot move mail any more)."""
        with self._lock:
            if self._closed:
                return
            stale = [
                name
                for name, (mb, poller, _) in self._running.items()
                if name not in wanted or wanted[name][0] != mb or wanted[name][1] is not poller.lease
            ]
            self._stop_units([self._running.pop(n) for n in stale], stop_timeout)
            for name, (mb, lease) in wanted.items():
                if name in self._running:
                    continue
                health = MailboxHealth()
                poller = MailboxPoller(mb, self._context, self._submit, health, lease)
                watchdog = MailboxWatchdog(mb, health, self._context)
                poller.start()
                watchdog.start()
                self._running[name] = (mb, poller, watchdog)

    def lost(self) -> list[str]:
        """Mailboxes whose poller stopped because its lease ran out (the coordinator takes them back)."""
        with self._lock:
            return [name for name, (_, poller, _) in self._running.items() if poller.lost]

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._closed = True
            units, self._running = list(self._running.values()), {}
            self._stop_units(units, timeout)

    def health(self) -> dict[str, MailboxHealth]:
        """Each watched mailbox's health, for metrics and the health check."""
        with self._lock:
            return {name: poller.health for name, (_, poller, _) in self._running.items()}

    @staticmethod
    def _stop_units(units: list[tuple[ImapMailbox, MailboxPoller, MailboxWatchdog]], timeout: float = 30.0) -> None:
        for _, poller, watchdog in units:
            poller.request_stop()
            watchdog.request_stop()
        deadline = time.monotonic() + timeout
        for mb, poller, watchdog in units:
            watchdog.join(max(0.1, deadline - time.monotonic()))
            if not poller.join(max(0.1, deadline - time.monotonic())):
                log.warning("imap %s: poller did not stop within %.0f s", mb.name, timeout)
