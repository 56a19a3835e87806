"""One daemon among several: heartbeat, and a fair share of the IMAP mailboxes, each under a lease.

Every third of ``cluster.lease_time`` the coordinator renews the leases it
holds, records its heartbeat, counts the daemons alive, and takes free or
expired mailboxes until it holds its share (the mailboxes divided by the daemons
alive, rounded up); above its share it gives the rest back, so a daemon that
joins gets work and a daemon that dies leaves its mailboxes to the others within
two lease times. The pollers themselves stop once their lease's deadline passes,
whether or not the coordinator got a word through (see ``storage/leases.py``).
With one daemon (SQLite) the same code runs and holds every mailbox.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from mailgate import __version__
from mailgate.config import ImapMailbox
from mailgate.errors import StartupError, TempFail
from mailgate.intake.imap import ImapIntake
from mailgate.intake.worker import Worker
from mailgate.logformat import log_event
from mailgate.pipeline.ingest import Context
from mailgate.storage import leases, registry
from mailgate.storage.leases import Lease

log = logging.getLogger(__name__)
FORGET_AFTER = 7 * 86400.0  # seconds: a daemon gone this long leaves the registry


def daemon_name(configured: str | None) -> str:
    return configured or f"{socket.gethostname()}-{os.getpid()}"


def machine() -> str:
    """This boot of this machine and this PID namespace: daemons that share it can see each other's pids
    (containers on one host share the boot id, not the namespace). Empty where /proc does not say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def shared_settings(ctx: Context) -> dict[str, str]:
    """What every daemon on one database must agree on; the secret by its fingerprint only."""
    tickets = ctx.config.main.tickets
    return {
        "security secret (security.secret_file)": ctx.identity.fingerprint(),
        "Message-ID domain (outbound.domain)": ctx.identity.domain,
        "tickets.number_format": tickets.number_format,
        "tickets.subject_tag": tickets.subject_tag,
    }


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Coordinator(Worker):
    def __init__(self, context: Callable[[], Context], imap: ImapIntake) -> None:
        cluster = context().config.main.cluster
        self._context = context
        self._imap = imap
        self.me = registry.Me(daemon_name(cluster.name), socket.gethostname(), os.getpid(), __version__, machine())
        self._held: dict[str, Lease] = {}
        self._trouble: str | None = None
        self._lock = threading.Lock()  # rounds run in this thread, and at once on a reload
        super().__init__("mailgate-coordinator")

    @property
    def ttl(self) -> float:
        return self._context().config.main.cluster.lease_time.total_seconds()

    def held(self) -> list[str]:
        return sorted(self._held)

    def start(self) -> None:
        """The first round runs before ``serve`` says it is ready: mailboxes free at start are taken at once.

        Before it, this daemon's settings that must be the same on every daemon are compared with those
        of the daemons alive: a mismatch would make tickets that one daemon cannot recognise (a reply
        token signed with another secret, a subject tag in another format), so serve refuses to start."""
        ctx = self._context()
        found = registry.disagreements(ctx.db, self.me, shared_settings(ctx), self.ttl)
        if found:
            raise StartupError(
                "this daemon's settings differ from those of the daemons already running on this database: "
                + "; ".join(found) + " (see README, Running several daemons)"
            )
        self._round()
        registry.forget_stale(self._context().db, FORGET_AFTER)
        super().start()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            self._round()

    def refresh(self) -> None:
        """After a reload: added, removed or changed mailboxes take effect now, not at the next round."""
        self._round()

    def _round(self) -> None:
        with self._lock:
            self._round_locked()

    def _round_locked(self) -> None:
        try:
            self.tick()
        except TempFail as exc:  # the database is away: the pollers stop by themselves at their deadline
            if self._trouble is None:
                log_event(
                    log,
                    "cluster database unreachable",
                    logging.WARNING,
                    daemon=self.me.name,
                    error=str(exc),
                    held=",".join(self.held()),
                )
            self._trouble = str(exc)
            return
        except Exception:
            log.exception("coordinator round failed")
            return
        if self._trouble is not None:
            log_event(log, "cluster database reachable again", daemon=self.me.name)
            self._trouble = None

    def _configured(self) -> dict[str, ImapMailbox]:
        """By name, which keys the lease and the checkpoint (the config refuses a name used twice)."""
        return {mb.name: mb for mb in self._context().config.main.intake.imap}

    def tick(self) -> None:
        db, ttl, me = self._context().db, self.ttl, self.me
        mailboxes = self._configured()
        lost = set(self._imap.lost())
        for name, lease in list(self._held.items()):
            if name not in mailboxes:
                self._give_up(name)
            elif name in lost or not leases.renew(db, lease):
                del self._held[name]
                log_event(log, "lease lost", logging.WARNING, daemon=me.name, mailbox=name, token=lease.token)
        self._bury_local_dead()
        share = math.ceil(len(mailboxes) / registry.alive_count(db, me, ttl))
        for name in sorted(self._held, key=self._order)[share:]:
            self._give_up(name)
        for name in sorted(mailboxes, key=self._order):
            if len(self._held) >= share:
                break
            if name not in self._held and (taken := leases.acquire(db, name, me.name, ttl)) is not None:
                self._held[name] = taken
                log_event(log, "lease taken", daemon=me.name, mailbox=name, token=taken.token)
        self._imap.watch({name: (mailboxes[name], lease) for name, lease in self._held.items()}, ttl / 3)
        registry.beat(db, me, self.held())

    def _bury_local_dead(self) -> None:
        """A daemon of this machine that was killed (a restart after kill -9, the OOM killer) cannot renew:
        its process is gone, which this machine can see, so its mailboxes are free at once rather than
        after its leases run out. Daemons of other machines are only ever judged by their leases."""
        db = self._context().db
        for name, pid in registry.local_peers(db, self.me):
            if not _running(pid):
                registry.declare_dead(db, name)
                log_event(log, "daemon gone", logging.WARNING, daemon=name, pid=pid, seen_by=self.me.name)

    def _order(self, mailbox: str) -> bytes:
        """Each daemon tries the mailboxes in its own order, so that several starting together spread out."""
        return hashlib.sha256(f"{self.me.name}/{mailbox}".encode()).digest()

    def _give_up(self, name: str) -> None:
        lease = self._held.pop(name)
        self._imap.watch(
            {n: (mb, self._held[n]) for n, mb in self._configured().items() if n in self._held}, self.ttl / 3
        )
        leases.release(self._context().db, lease)
        log_event(log, "lease released", daemon=self.me.name, mailbox=name, token=lease.token)

    def resign(self) -> None:
        """After the pollers stopped: give every mailbox back and say this daemon stopped."""
        db = self._context().db
        try:
            for lease in list(self._held.values()):
                leases.release(db, lease)
            self._held.clear()
            registry.stopped(db, self.me.name)
        except TempFail as exc:  # the leases expire by themselves
            log_event(log, "leases not released", logging.WARNING, daemon=self.me.name, error=str(exc))
