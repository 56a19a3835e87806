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
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailgate import logformat
from mailgate.clock import Clock, SystemClock
from mailgate.config import Config, SmtpIntake, load_config
from mailgate.daemon import memory
from mailgate.daemon.context import Holder, build_context, build_transport, reload
from mailgate.daemon.coordinator import Coordinator, daemon_name
from mailgate.daemon.ingest_process import SLOTS, ProcessWriter
from mailgate.daemon.intake_log import LoggedWriter
from mailgate.daemon.metrics_http import MetricsServer, Probes
from mailgate.daemon.scheduler import Jobs, start_scheduler
from mailgate.daemon.sender_process import SenderProcess
from mailgate.daemon.writer import BatchWriter
from mailgate.errors import StartupError
from mailgate.intake.imap import ImapIntake
from mailgate.intake.local_socket import LocalIntake
from mailgate.intake.smtp import Gate, IntakeHandler, protocol_class
from mailgate.logformat import log_event
from mailgate.pipeline.ingest import Context

if TYPE_CHECKING:
    from mailgate.web.server import HttpServer

log = logging.getLogger(__name__)


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


def _bind(config: Config) -> socket.socket | None:
    """The listening socket, bound before anything else starts: a port in use is told in one line, at once."""
    smtp_cfg = config.main.intake.smtp
    if smtp_cfg is None:
        return None
    try:
        return socket.create_server((smtp_cfg.host, smtp_cfg.port), reuse_port=False, backlog=128)
    except OSError as exc:
        raise StartupError(f"cannot listen on {smtp_cfg.listen}: {exc.strerror or exc}") from exc


async def _start_smtp(
    holder: Holder, writer: LoggedWriter, clock: Clock, sock: socket.socket | None
) -> asyncio.base_events.Server | None:
    smtp_cfg = holder.get().config.main.intake.smtp
    if smtp_cfg is None or sock is None:
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
    return await loop.create_server(connection, sock=sock)


def _bind_http(config: Config) -> socket.socket | None:
    http = config.main.http
    if http is None:
        return None
    from mailgate.web.server import bind  # the HTTP stack is imported only by a daemon that serves HTTP

    try:
        return bind(http.host, http.port)
    except OSError as exc:
        raise StartupError(f"cannot listen on {http.listen} (http): {exc.strerror or exc}") from exc


async def _start_http(holder: Holder, intake: LoggedWriter, sock: socket.socket | None) -> HttpServer | None:
    http = holder.get().config.main.http
    if http is None or sock is None:
        return None
    from mailgate.web.app import build_app
    from mailgate.web.runtime import Runtime
    from mailgate.web.server import HttpServer

    app = build_app(Runtime(holder.get, intake.submit_async), http.max_request_size, form=http.form.enabled)
    server = HttpServer(app, sock)
    await server.start()
    return server


def _smtp_limit(holder: Holder) -> int | None:
    """Piped mail has the listener's size limit, or none without a listener (as ``ingest`` alone)."""
    smtp = holder.get().config.main.intake.smtp
    return smtp.max_message_size if smtp is not None else None


class _Parts:
    """What serve has started so far, stopped in reverse order however far start-up got."""

    def __init__(self) -> None:
        self.metrics: MetricsServer | None = None
        self.http: HttpServer | None = None
        self.server: asyncio.base_events.Server | None = None
        self.local: LocalIntake | None = None
        self.imap: ImapIntake | None = None
        self.coordinator: Coordinator | None = None
        self.writer: BatchWriter | ProcessWriter | None = None
        self.scheduler: Any = None
        self.sender: SenderProcess | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def stop(self, drain: float = 25.0) -> None:
        """Idempotent: each part is forgotten once stopped. ``drain``: seconds for all of it."""
        deadline = time.monotonic() + drain
        mark = time.monotonic()

        def left() -> float:
            return max(0.5, deadline - time.monotonic())

        def took(part: str) -> None:
            nonlocal mark
            log.debug("stopped %s in %.2f s", part, time.monotonic() - mark)
            mark = time.monotonic()

        server, self.server = self.server, None
        if server is not None:
            server.close()
        http, self.http = self.http, None
        if http is not None:  # requests in flight are answered (their mail is stored) before the writer closes
            await http.stop()
        local, self.local = self.local, None
        if local is not None:  # ingest stores mail itself from here on
            local.close()
        await self._stop_mailboxes(left)
        took("imap")
        writer, self.writer = self.writer, None
        if writer is not None:
            await asyncio.to_thread(writer.close, left())
            took("pipeline")
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            await scheduler.stop()
            took("scheduler")
        sender, self.sender = self.sender, None
        if sender is not None:
            await asyncio.to_thread(sender.close, left())
            took("sender")
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task.cancel()
        metrics, self.metrics = self.metrics, None
        if metrics is not None:
            metrics.close()

    async def _stop_mailboxes(self, left: Callable[[], float]) -> None:
        coordinator, self.coordinator = self.coordinator, None
        if coordinator is not None:  # no more rounds: nothing starts a poller from here on
            coordinator.request_stop()
            await asyncio.to_thread(coordinator.join, left())
        imap, self.imap = self.imap, None
        if imap is not None:  # leave IDLE, log out; their last commits finish before the writer closes
            await asyncio.to_thread(imap.stop, left())
        if coordinator is not None:  # the mailboxes are free for the other daemons at once
            await asyncio.to_thread(coordinator.resign)

    def children(self) -> dict[str, bool]:
        found: dict[str, bool] = {}
        if isinstance(self.writer, ProcessWriter):
            found["pipeline"] = self.writer.alive()
        if self.sender is not None:
            found["sender"] = self.sender.alive()
        return found

    def listening(self, config: Config) -> bool:
        return config.main.intake.smtp is None or (self.server is not None and self.server.is_serving())


def _start_metrics(config: Config, ctx: Context, parts: _Parts) -> MetricsServer:
    assert config.main.metrics is not None
    probes = Probes(
        listening=lambda: parts.listening(config),
        children=parts.children,
        database=ctx.db,
        imap=lambda: parts.imap.health() if parts.imap is not None else {},
        daemon=daemon_name(config.main.cluster.name),
        leases=lambda: parts.coordinator.held() if parts.coordinator is not None else [],
    )
    try:
        return MetricsServer(config.main.metrics.host, config.main.metrics.port, probes)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.main.metrics.listen} (metrics): {exc.strerror or exc}") from exc


async def serve(config_path: Path, clock: Clock | None = None) -> int:
    memory.return_big_blocks()
    config = load_config(config_path)
    logformat.configure(config.main.logging.format, config.main.logging.level)
    sock = _bind(config)
    parts = _Parts()
    http_sock = None
    try:
        http_sock = _bind_http(config)
        ctx = build_context(config, clock or SystemClock())
        if config.main.metrics is not None:  # bound before the children start: a port in use fails at once
            parts.metrics = _start_metrics(config, ctx, parts)
        ctx.db.upgrade()
        return await _run(config, ctx, sock, http_sock, parts)
    finally:
        await parts.stop()
        for bound in (sock, http_sock):
            if bound is not None:
                bound.close()


async def _run(config: Config, ctx: Context, sock: socket.socket | None, http_sock: socket.socket | None,
               parts: _Parts) -> int:
    holder = Holder(ctx)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # from the start: a SIGTERM while the parts start (a service manager giving up, a test) is a drain
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    last_wake = [0.0]

    def on_commit(results: list[Any]) -> None:
        if time.monotonic() - last_wake[0] > 0.5:  # wake the sender, at most twice a second
            last_wake[0] = time.monotonic()
            if parts.sender is not None:
                parts.sender.wake()
            elif parts.scheduler is not None:
                loop.call_soon_threadsafe(parts.scheduler.wake_outbox)

    threads = 1 if ctx.db.is_sqlite else 4
    if config.main.processes:
        writer = await asyncio.to_thread(ProcessWriter, config, threads=threads, on_commit=on_commit)
        parts.writer = writer
        # the writers of all three processes take turns (SQLite's lock is not fair)
        ctx.db.share_turns(writer.turns, SLOTS["serve"])
        parts.sender = SenderProcess(config, turns=writer.turns)
        log.info("pipeline in process %d, outbox sender in process %d", writer.pid, parts.sender.pid)
    else:
        parts.writer = BatchWriter(holder.get, threads=threads, on_commit=on_commit)
    jobs = Jobs(holder.get, lambda: build_transport(holder.get().config))
    intake = LoggedWriter(parts.writer)
    sender = parts.sender
    parts.scheduler = start_scheduler(
        jobs, config.main.scheduler.outbox_interval, flush=sender.wake if sender is not None else None
    )
    imap = parts.imap = ImapIntake(holder.get, intake.submit)  # one thread per mailbox, same writer as SMTP
    # which mailboxes are ours (leases), before the listener answers: a daemon whose settings differ from
    # the running daemons' stops here, before it took any mail
    coordinator = parts.coordinator = Coordinator(holder.get, imap)
    await asyncio.to_thread(coordinator.start)
    parts.server = await _start_smtp(holder, intake, ctx.clock, sock)
    parts.http = await _start_http(holder, intake, http_sock)
    local = LocalIntake(config.state_dir, intake.submit_async, ctx.clock, lambda: _smtp_limit(holder))
    if await local.start():
        parts.local = local

    def on_hup() -> None:
        sd_notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        if reload(holder):  # restart only the mailboxes whose settings changed (stopping one can take a second)
            logging_cfg = holder.get().config.main.logging
            logformat.configure(logging_cfg.format, logging_cfg.level)
            if isinstance(parts.writer, ProcessWriter):
                parts.writer.reconfigure(holder.get().config)
            if sender is not None:
                sender.reconfigure(holder.get().config)
            loop.run_in_executor(None, coordinator.refresh)
        sd_notify("READY=1")

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    where = f"{config.main.intake.smtp.listen}" if config.main.intake.smtp else "no SMTP listener"
    log_event(log, "mailgate ready", listen=where, database=ctx.db.where(), daemon=coordinator.me.name,
              mailboxes=",".join(coordinator.held()) or None)
    sd_notify("READY=1", f"STATUS=Accepting mail on {where}")
    parts.tasks += [asyncio.create_task(_watchdog(stop)), asyncio.create_task(_watch_files(holder, stop, on_hup))]
    await stop.wait()
    started = time.monotonic()
    log.info("stopping: draining queued mail")
    sd_notify("STOPPING=1")
    await parts.stop(config.main.drain_time.total_seconds())
    holder.get().db.dispose()
    log_event(log, "stopped", seconds=round(time.monotonic() - started, 2))
    return 0
