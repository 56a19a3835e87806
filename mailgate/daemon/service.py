"""Wiring: Config -> Context -> adapters + scheduler. The one place where parts meet.

``serve`` answers SIGTERM by draining (stop accepting, finish what is
queued, exit 0) and SIGHUP by building a whole new Context and swapping it
only if it validates, so a bad edit never takes intake down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from mailgate import memory
from mailgate.adapters.imap import ImapIntake
from mailgate.adapters.smtp_in import Gate, IntakeHandler, protocol_class
from mailgate.adapters.smtp_out import MaildirTransport, SmtpTransport, Transport
from mailgate.blobs import BlobStore
from mailgate.clock import Clock, SystemClock
from mailgate.config import Config, SmtpIntake, load_config
from mailgate.db import Database
from mailgate.dkimsign import DkimSigner
from mailgate.errors import ConfigError
from mailgate.identity import Identity, load_secret
from mailgate.ingest_process import SLOTS, ProcessWriter
from mailgate.pipeline.audience import Directory
from mailgate.pipeline.commands import Vocabulary
from mailgate.pipeline.ingest import Context
from mailgate.pipeline.notice import NotifyContext
from mailgate.pipeline.thread import TicketTag
from mailgate.rules.engine import CompiledRules
from mailgate.scheduler import Jobs, start_scheduler
from mailgate.sender_process import SenderProcess
from mailgate.templates import Templates
from mailgate.writer import BatchWriter

log = logging.getLogger(__name__)


def build_context(config: Config, clock: Clock | None = None, db: Database | None = None) -> Context:
    main = config.main
    if db is None or db.url != config.database_url:
        db = Database(config.database_url, echo=main.database.echo if main.database else False)
    secret_file = main.security.secret_file or main.state_dir / "secret"
    domain = main.outbound.domain or parseaddr(main.outbound.from_)[1].rpartition("@")[2] or "localhost"
    assert main.templates is not None  # resolved by load_config
    templates = Templates(main.templates)
    problems = templates.check()
    if problems:
        raise ConfigError(problems)
    if main.outbound.dkim is not None:
        DkimSigner(main.outbound.dkim)  # an unreadable or invalid key is a configuration error, found now
    own = {a.lower() for a in main.intake.addresses}
    if main.intake.notes_address:
        own.add(main.intake.notes_address)
    own.add(parseaddr(main.outbound.from_)[1].lower())
    own_addresses = frozenset(a for a in own if a)
    identity = Identity(load_secret(secret_file), domain)
    tag = TicketTag(main.tickets.number_format, main.tickets.subject_tag)
    directory = Directory(config.agents)
    return Context(
        config=config,
        db=db,
        clock=clock or SystemClock(),
        templates=templates,
        identity=identity,
        tag=tag,
        blobs=BlobStore(main.state_dir / "attachments"),
        rules=CompiledRules(config.rules.rules),
        own_addresses=own_addresses,
        directory=directory,
        vocabulary=Vocabulary(
            agents=dict(directory.names),
            departments=frozenset(d.name for d in config.agents.departments),
            topics=frozenset(t.name for t in config.rules.help_topics),
            plans=frozenset(config.sla.sla_plans),
        ),
        notifier=NotifyContext(
            identity,
            tag,
            templates,
            own_addresses,
            main.notifications,
            directory,
            main.outbound.from_,
            main.intake.addresses[0],
            {t.name: t.notifications for t in config.rules.help_topics if t.notifications},
            main.lifecycle.satisfaction_question,
        ),
    )


def build_transport(config: Config) -> Transport:
    out = config.main.outbound
    if out.transport == "maildir":
        assert out.maildir is not None
        return MaildirTransport(out.maildir)
    smtp = out.smtp
    password = None
    if smtp.password_file:
        password = smtp.password_file.read_text().strip()
    elif smtp.password_env:
        password = os.environ.get(smtp.password_env)
    return SmtpTransport(
        smtp.host,
        smtp.port,
        starttls=smtp.starttls,
        tls=smtp.tls,
        username=smtp.username,
        password=password,
        timeout=smtp.timeout.total_seconds(),
    )


def sd_notify(*lines: str) -> bool:
    """systemd notify protocol without a dependency; a silent no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)
        return False
    return True


class Holder:
    """The current Context; adapters read it per message, reload swaps it whole."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()

    def get(self) -> Context:
        return self._ctx

    def swap(self, ctx: Context) -> None:
        with self._lock:
            self._ctx = ctx


def reload(holder: Holder) -> bool:
    old = holder.get()
    try:
        config = load_config(old.config.path)
        ctx = build_context(config, old.clock, old.db)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("reload refused, old configuration stays in force: %s", problem)
        return False
    except Exception as exc:
        log.error("reload refused, old configuration stays in force: %r", exc)
        return False
    if config.database_url != old.config.database_url:
        log.warning("database.url changes need a restart; keeping %s", old.config.database_url)
        ctx = replace(ctx, db=old.db)
    holder.swap(ctx)
    log.info("configuration reloaded from %s", config.path)
    return True


def swap_config(holder: Holder, config: Config) -> None:
    """Apply a configuration the daemon already validated (in a child process of serve)."""
    old = holder.get()
    try:
        ctx = build_context(config, old.clock, old.db)
        if ctx.db is not old.db:  # a new database.url needs a restart, as in reload()
            ctx.db.dispose()
            ctx = replace(ctx, db=old.db)
        holder.swap(ctx)
    except Exception:
        log.exception("could not apply the reloaded configuration; keeping the old one")


def watched_files(config: Config) -> list[Path]:
    main = config.main
    files = [config.path, *(p for p in (main.rules, main.agents, main.sla) if p is not None)]
    if main.templates is not None and main.templates.is_dir():
        files += sorted(main.templates.glob("*.j2"))
    return files


def _mtimes(files: list[Path]) -> dict[Path, float]:
    out = {}
    for path in files:
        try:
            out[path] = path.stat().st_mtime
        except OSError:
            out[path] = -1.0
    return out


async def _watch_files(
    holder: Holder, stop: asyncio.Event, on_change: Callable[[], None], interval: float = 1.0
) -> None:
    """Reload when an admin saves a config file, as if SIGHUP had been sent (polling: no extra dependency)."""
    seen = _mtimes(watched_files(holder.get().config))
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        current = _mtimes(watched_files(holder.get().config))
        if current != seen:
            log.info("configuration files changed; reloading")
            on_change()
            seen = _mtimes(watched_files(holder.get().config))


async def _watchdog(stop: asyncio.Event) -> None:
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    pid = os.environ.get("WATCHDOG_PID")
    if usec <= 0 or (pid and int(pid) != os.getpid()):
        return
    while not stop.is_set():
        sd_notify("WATCHDOG=1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=usec / 2e6)


async def _start_smtp(
    holder: Holder, writer: BatchWriter | ProcessWriter, clock: Clock
) -> asyncio.base_events.Server | None:
    smtp_cfg = holder.get().config.main.intake.smtp
    if smtp_cfg is None:
        return None
    def limits() -> SmtpIntake:
        return holder.get().config.main.intake.smtp or SmtpIntake()

    handler = IntakeHandler(
        writer.submit_async, lambda: holder.get().own_addresses, clock, lmtp=smtp_cfg.lmtp, limits=limits
    )
    protocol = protocol_class(lmtp=smtp_cfg.lmtp)  # ours: 451 not 500, long lines, caps, LMTP per-recipient answers
    gate = Gate(limits)
    hostname = socket.getfqdn()

    def connection() -> Any:
        made = protocol(
            handler,
            data_size_limit=limits().max_message_size,
            enable_SMTPUTF8=True,
            hostname=hostname,
            ident="mailgate",
        )
        made.gate = gate
        return made

    loop = asyncio.get_running_loop()
    return await loop.create_server(connection, host=smtp_cfg.host, port=smtp_cfg.port, reuse_address=True)


async def serve(config_path: Path, clock: Clock | None = None) -> int:
    memory.return_big_blocks()
    config = load_config(config_path)
    clock = clock or SystemClock()
    ctx = build_context(config, clock)
    ctx.db.upgrade()
    holder = Holder(ctx)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    last_wake = [0.0]

    def on_commit(results: list[Any]) -> None:
        if time.monotonic() - last_wake[0] > 0.5:  # wake the sender, at most twice a second
            last_wake[0] = time.monotonic()
            if sender is not None:
                sender.wake()
            else:
                loop.call_soon_threadsafe(scheduler.wake_outbox)

    threads = 1 if ctx.db.is_sqlite else 4
    writer: BatchWriter | ProcessWriter
    sender: SenderProcess | None = None
    if config.main.processes:
        writer = await asyncio.to_thread(ProcessWriter, config, threads=threads, on_commit=on_commit)
        # the writers of all three processes take turns (SQLite's lock is not fair)
        ctx.db.share_turns(writer.turns, SLOTS["serve"])
        sender = SenderProcess(config, turns=writer.turns)
        log.info("pipeline in process %d, outbox sender in process %d", writer.pid, sender.pid)
    else:
        writer = BatchWriter(holder.get, threads=threads, on_commit=on_commit)
    jobs = Jobs(holder.get, lambda: build_transport(holder.get().config))
    scheduler = start_scheduler(
        jobs, config.main.scheduler.outbox_interval, flush=sender.wake if sender is not None else None
    )
    server = await _start_smtp(holder, writer, clock)
    imap = ImapIntake(holder.get, writer.submit)  # one thread per mailbox, same writer as SMTP
    imap.start(config.main.intake.imap)

    def on_hup() -> None:
        sd_notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        if reload(holder):  # restart only the mailboxes whose settings changed (stopping one can take a second)
            if isinstance(writer, ProcessWriter):
                writer.reconfigure(holder.get().config)
            if sender is not None:
                sender.reconfigure(holder.get().config)
            loop.run_in_executor(None, imap.reconfigure, holder.get().config.main.intake.imap)
        sd_notify("READY=1")

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    where = f"{config.main.intake.smtp.listen}" if config.main.intake.smtp else "no SMTP listener"
    log.info("mailgate ready: %s, database %s", where, ctx.db.url.split("@")[-1])
    sd_notify("READY=1", f"STATUS=Accepting mail on {where}")
    watchdog = asyncio.create_task(_watchdog(stop))
    watcher = asyncio.create_task(_watch_files(holder, stop, on_hup))
    await stop.wait()
    log.info("stopping: draining queued mail")
    sd_notify("STOPPING=1")
    if server is not None:
        server.close()
    await asyncio.to_thread(imap.stop)  # leave IDLE, log out; their last commits finish before the writer closes
    await asyncio.to_thread(writer.close)
    await scheduler.stop()
    if sender is not None:
        await asyncio.to_thread(sender.close)
    watchdog.cancel()
    watcher.cancel()
    holder.get().db.dispose()
    log.info("stopped at %s", datetime.now(UTC).isoformat())
    return 0
