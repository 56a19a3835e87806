"""What the crash-point and outage suites share: ``serve`` in a process group of its own, ``kill -9`` of
the whole group, SMTP clients that behave like a sending MTA, and the durability invariants.

Why a process group: ``serve`` runs a pipeline child and an outbox-sender child. A ``kill -9`` of the
parent alone would leave them running to finish what they hold and so hide the crash; a power cut or
the OOM killer takes all three at once, and so do these tests (``os.killpg``).

Why MTA-like clients: the promise is about what a sender was told. A mail whose 250 never arrived (the
connection died during DATA) is sent again, byte for byte, exactly as Postfix would; dedupe must then
keep it to one ticket, and a 250 must mean it is stored.
"""

from __future__ import annotations

import contextlib
import email.parser
import os
import random
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mailgate.config import load_config
from tests.conftest import REPO, SmtpSink, make_mail, sql_rows, wait_for_smtp, wait_until
from tests.support.dovecot_fixture import DovecotServer

T = TypeVar("T")
SOAK = os.environ.get("MAILGATE_SOAK") == "1"
LEASE = "2s"  # outbound.lease: a row claimed by a killed sender is taken over after this
HEADERS = email.parser.BytesHeaderParser()
CHILDREN = re.compile(r"pipeline in process (\d+), outbox sender in process (\d+)")


def rounds(default: int = 20, soak: int = 100) -> int:
    """Crash rounds per scenario: ``MAILGATE_CRASH_ROUNDS`` wins, else more under ``MAILGATE_SOAK=1``."""
    return int(os.environ.get("MAILGATE_CRASH_ROUNDS") or (soak if SOAK else default))


def seeded(scenario: str) -> tuple[random.Random, int]:
    """A random source whose seed is printed, so a failing round can be replayed (``MAILGATE_CRASH_SEED``)."""
    seed = int(os.environ.get("MAILGATE_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"{scenario}: seed {seed} (replay with MAILGATE_CRASH_SEED={seed})", flush=True)
    return random.Random(seed), seed


# --------------------------------------------------------------------------- serve as a process group
def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@dataclass
class Daemon:
    """One ``mailgate serve`` started with ``start_new_session=True``: its pid is its process group."""

    proc: subprocess.Popen[bytes]
    config: Path
    log: Path
    host: str
    port: int
    log_from: int = 0

    def output(self) -> str:
        """This run's part of the (shared, appended) log."""
        with self.log.open("rb") as fh:
            fh.seek(self.log_from)
            return fh.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def children(self, timeout: float = 120) -> tuple[int, int]:
        """The pipeline and sender pids, once serve has logged them."""
        found = wait_until(lambda: CHILDREN.search(self.output()), timeout=timeout,
                           what="serve's child processes", log=self.output)
        return int(found.group(1)), int(found.group(2))

    def kill9(self) -> list[int]:
        """SIGKILL to serve and every child at once; return once none of them runs any more."""
        victims = group_members(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(60)
        wait_until(lambda: not group_members(self.proc.pid), timeout=120, what="the whole process group gone")
        return victims

    def stop(self, timeout: float = 120) -> int | None:
        """SIGTERM (serve drains and stops its children), then make sure nothing of the group is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        code = self.proc.poll()
        self.kill9()
        return code


class Supervisor:
    """Starts daemons and, whatever happens in the test, leaves none of them (or their children) running."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.daemons: list[Daemon] = []
        self.helpers: list[Any] = []  # client threads (anything with halt()), stopped first

    def track(self, helper: T) -> T:
        self.helpers.append(helper)
        return helper

    def start(self, config: Path, *, env: dict[str, str] | None = None, timeout: float = 120) -> Daemon:
        smtp = load_config(config).main.intake.smtp
        assert smtp is not None
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "-c", str(config)], stdout=out,
                                    stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO,
                                    start_new_session=True)
        daemon = Daemon(proc, config, self.log, smtp.host, smtp.port, offset)
        self.daemons.append(daemon)
        try:
            wait_for_smtp(smtp.host, smtp.port, proc, timeout=timeout)
        except Exception:
            daemon.kill9()
            raise RuntimeError(f"serve did not start:\n{daemon.output()[-6000:]}") from None
        return daemon

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        for helper in self.helpers:
            helper.halt()
        for daemon in self.daemons:
            if group_members(daemon.proc.pid) or daemon.proc.poll() is None:
                daemon.kill9()


# --------------------------------------------------------------------------- an MTA's view of SMTP
@dataclass
class Mta:
    """Clients that keep every mail queued until it got a 250; a 4xx or a broken connection means retry.

    ``feed`` (when set) supplies new mail whenever the queue is empty, so the clients stream
    without pause; without it they only work off what is queued.
    """

    host: str
    port: int
    clients: int = 3
    feed: Callable[[], tuple[str, bytes]] | None = None
    queue: deque[tuple[str, bytes]] = field(default_factory=deque)
    acked: Counter[str] = field(default_factory=Counter)
    answers: list[tuple[str, int, str, float]] = field(default_factory=list)  # (Message-ID, code, text, when)
    offered: set[str] = field(default_factory=set)
    # several daemons behind the MTA (MX records of one priority, a load balancer): each new connection
    # goes to the next; one that does not answer within ``timeout`` is given up and the mail sent elsewhere
    targets: list[tuple[str, int]] = field(default_factory=list)
    timeout: float = 60.0
    _turn: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def add(self, mid: str, raw: bytes) -> None:
        with self._lock:
            self.queue.append((mid, raw))
            self.offered.add(mid)

    def _take(self) -> tuple[str, bytes] | None:
        with self._lock:
            if self.queue:
                return self.queue.popleft()
            feed = self.feed
        if feed is None:
            return None
        mid, raw = feed()
        with self._lock:
            self.offered.add(mid)
        return mid, raw

    def _target(self) -> tuple[str, int]:
        if not self.targets:
            return self.host, self.port
        with self._lock:
            self._turn += 1
            return self.targets[self._turn % len(self.targets)]

    def _requeue(self, item: tuple[str, bytes]) -> None:
        with self._lock:
            self.queue.appendleft(item)

    def _client(self) -> None:
        client: smtplib.SMTP | None = None
        try:
            while not self._stop.is_set():
                item = self._take()
                if item is None:
                    return
                mid, raw = item
                sender = f"c{abs(hash(mid)) % 10**8}@customer.example"
                try:
                    if client is None:
                        client = smtplib.SMTP(*self._target(), timeout=self.timeout)
                        client.ehlo("client.example")
                    code, text = client.mail(sender)
                    if code == 250:
                        code, text = client.rcpt("support@example.com")
                    if code == 250:
                        code, text = client.data(raw)
                    else:
                        client.rset()
                except (smtplib.SMTPException, OSError):
                    self._requeue(item)  # fate unknown (maybe stored): send it again, as an MTA would
                    if client is not None:
                        with contextlib.suppress(Exception):
                            client.close()
                    client = None
                    self._stop.wait(0.2)
                    continue
                with self._lock:
                    self.answers.append((mid, code, text.decode(errors="replace"), time.monotonic()))
                    if code == 250:
                        self.acked[mid] += 1
                if code != 250:
                    self._requeue(item)
                    if code == 421:
                        with contextlib.suppress(Exception):
                            client.close()
                        client = None
                    self._stop.wait(0.2)
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.quit()
                with contextlib.suppress(Exception):
                    client.close()

    def start(self, host: str | None = None, port: int | None = None) -> Mta:
        self.host, self.port = host or self.host, port or self.port
        self._stop.clear()
        self._threads = [threading.Thread(target=self._client, name=f"mta-{i}", daemon=True)
                         for i in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def halt(self) -> None:
        """Stop the clients (what is queued stays queued for the next start)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def drain(self, timeout: float = 240, log: Callable[[], str] | None = None) -> None:
        """Without new mail, wait until every queued mail got its 250."""
        self.feed = None
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(1.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads) or self.queue:
            self.halt()
            detail = f"\n--- serve log ---\n{log()[-6000:]}" if log else ""
            raise AssertionError(f"{len(self.queue)} mail(s) still without a 250 after {timeout} s{detail}")

    def acked_set(self) -> set[str]:
        with self._lock:
            return set(self.acked)

    def codes_since(self, since: float) -> list[int]:
        with self._lock:
            return [code for _, code, _, when in self.answers if when >= since]


def mail_factory(tag: str, size: int = 0) -> Callable[[], tuple[str, bytes]]:
    """New mail, each from its own customer (so no rate limit holds back its acknowledgment)."""
    counter = iter(range(10**9))
    lock = threading.Lock()
    padding = ("x" * 76 + "\r\n") * (size // 78)

    def make() -> tuple[str, bytes]:
        with lock:
            n = next(counter)
        mid = f"<{tag}-{n}@customer.example>"
        raw = make_mail(f"{tag} {n}", sender=f"{tag}{n} <{tag}{n}@customer.example>", message_id=mid,
                        body=f"Mail {n} of {tag}.\r\n{padding}")
        return mid, raw

    return make


# --------------------------------------------------------------------------- IMAP
class Appender:
    """Puts new mail into INBOX in a thread, as the MTA's local delivery would, until stopped."""

    def __init__(self, dovecot: DovecotServer, user: str) -> None:
        self.dovecot, self.user = dovecot, user
        self.appended: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._count = 0

    def _run(self) -> None:
        with self.dovecot.imap(self.user) as client:
            while not self._stop.is_set():
                for _ in range(2):
                    mid = f"<imap-{self._count}@customer.example>"
                    client.append("INBOX", make_mail(f"imap {self._count}", sender=f"i{self._count}@customer.example",
                                                     message_id=mid))
                    self.appended.append(mid)
                    self._count += 1
                self._stop.wait(0.1)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="imap-appender", daemon=True)
        self._thread.start()

    def halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)


def folder_count(dovecot: DovecotServer, user: str, folder: str) -> int:
    with dovecot.imap(user) as client:
        if not client.folder_exists(folder):
            return 0
        return int(client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])


def folder_ids(dovecot: DovecotServer, user: str, folder: str) -> list[str]:
    """The Message-IDs in an IMAP folder (read-only, nothing marked)."""
    with dovecot.imap(user) as client:
        if not client.folder_exists(folder):
            return []
        client.select_folder(folder, readonly=True)
        uids = client.search()
        if not uids:
            return []
        fetched = client.fetch(uids, [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        return [HEADERS.parsebytes(data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"])["Message-ID"].strip()
                for data in fetched.values()]


# --------------------------------------------------------------------------- invariants
@dataclass
class Intake:
    """What the database says about a set of mails: lost, stored twice, ticket count."""

    accepted: Counter[str]
    lost: set[str]
    doubled: dict[str, int]
    ticket_doubled: dict[str, int]
    tickets: int
    duplicate_rows: int


def intake_check(config: Path, must_have: set[str]) -> Intake:
    rows = sql_rows(config, "SELECT message_id, status FROM inbound")
    accepted = Counter(mid for mid, status in rows if status == "accepted")
    per_mid = sql_rows(config, "SELECT message_id, count(DISTINCT ticket_id) FROM message GROUP BY message_id")
    [(tickets,)] = sql_rows(config, "SELECT count(*) FROM ticket")
    return Intake(
        accepted=accepted,
        lost=must_have - set(accepted),
        doubled={mid: n for mid, n in accepted.items() if n > 1},
        ticket_doubled={mid: n for mid, n in per_mid if n > 1},
        tickets=int(tickets),
        duplicate_rows=sum(1 for _, status in rows if status == "duplicate"),
    )



def sink_message_ids(sink: SmtpSink) -> Counter[str]:
    """How often the relay took each outgoing Message-ID."""
    return Counter(str(HEADERS.parsebytes(m.data)["Message-ID"]).strip() for m in list(sink.messages))


@dataclass
class Outgoing:
    rows: int
    unsent: int
    never_delivered: list[str]
    duplicate_sends: int
    worst: list[tuple[str, int]]


def outgoing_check(config: Path, sink: SmtpSink) -> Outgoing:
    rows = sql_rows(config, "SELECT message_id, status FROM outbox")
    delivered = sink_message_ids(sink)
    return Outgoing(
        rows=len(rows),
        unsent=sum(1 for _, status in rows if status != "sent"),
        never_delivered=[mid for mid, _ in rows if delivered[mid] == 0],
        duplicate_sends=sum(n - 1 for n in delivered.values() if n > 1),
        worst=[(mid, n) for mid, n in delivered.most_common(3) if n > 1],
    )


def rows_sending(config: Path) -> int:
    """Rows a sender claimed and had not recorded: after a kill, only these can go out twice."""
    [(count,)] = sql_rows(config, "SELECT count(*) FROM outbox WHERE status = 'sending'")
    return int(count)


def wait_outbox_sent(config: Path, timeout: float = 240, log: Callable[[], str] | None = None) -> None:
    wait_until(lambda: not sql_rows(config, "SELECT id FROM outbox WHERE status <> 'sent'"), timeout=timeout,
               what="every outbox row sent", log=log)


def summary(scenario: str, **numbers: Any) -> None:
    """One line per scenario for the reliability table (shown with ``pytest -s`` or on failure)."""
    print(f"RESILIENCE {scenario}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()), flush=True)


@contextlib.contextmanager
def timed() -> Iterator[Callable[[], float]]:
    started = time.monotonic()
    yield lambda: round(time.monotonic() - started, 1)
