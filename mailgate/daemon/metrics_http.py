"""``/metrics`` (Prometheus text, from all of serve's processes) and ``/healthz`` on a loopback port.

``prepare`` must run before prometheus_client is imported anywhere in serve: the multiprocess mode is
chosen at import, and the children inherit the folder through the environment. The counters of
``mailgate/metrics.py`` are merged from that folder at each scrape; states (outbox depth, the oldest
pending mail, overdue tickets, each IMAP mailbox's last success, whether the children live) are read
then, so they are never stale. The server is the standard library's WSGI server on a thread of its
own: a scrape never waits for the event loop that answers SMTP.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from mailgate import __version__

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger(__name__)


def prepare(state_dir: Path) -> Path:
    """An empty folder for this run's counters (a previous run's would be counted again), named in the
    environment before prometheus_client is imported by serve or by the children it spawns."""
    folder = state_dir / "metrics"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


@dataclass
class Probes:
    """What serve tells the health check and the scrape; each is called on the HTTP thread."""

    listening: Callable[[], bool]
    children: Callable[[], dict[str, bool]]  # name -> alive
    database: Any  # storage.db.Database
    imap: Callable[[], dict[str, Any]]  # mailbox name -> MailboxHealth
    daemon: str = ""  # this daemon's name in the cluster registry (cluster.name, or host-pid)
    leases: Callable[[], list[str]] = lambda: []  # the mailboxes this daemon holds the lease of


class _StateCollector:
    def __init__(self, probes: Probes) -> None:
        self.probes = probes

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from mailgate.storage.store import Store

        now = datetime.now(UTC)
        depth = GaugeMetricFamily("mailgate_outbox_mails", "Outbox rows by status", labels=["status"])
        oldest = GaugeMetricFamily("mailgate_outbox_oldest_pending_seconds", "Age of the oldest pending row")
        overdue = GaugeMetricFamily("mailgate_tickets_overdue", "Tickets past an SLA target, not yet resolved")
        try:
            with self.probes.database.reader() as session:
                store = Store(session)
                counts, first, late = store.outbox_by_status(), store.oldest_pending_at(), store.overdue_count()
            for status in ("pending", "sending", "sent", "failed"):
                depth.add_metric([status], counts.get(status, 0))
            oldest.add_metric([], (now - first).total_seconds() if first else 0.0)
            overdue.add_metric([], late)
            yield from (depth, oldest, overdue)
        except Exception as exc:  # the database is away: say so in the health check, scrape the rest
            log.debug("metrics: database states unavailable: %r", exc)
        last = GaugeMetricFamily(
            "mailgate_imap_last_success_timestamp_seconds", "When each mailbox was last reached", labels=["mailbox"]
        )
        failing = GaugeMetricFamily("mailgate_imap_failing", "1 while a mailbox cannot be reached", labels=["mailbox"])
        for name, health in sorted(self.probes.imap().items()):
            last.add_metric([name], health.last_success_at or 0.0)
            failing.add_metric([name], 1.0 if health.failing_since is not None else 0.0)
        alive = GaugeMetricFamily("mailgate_process_up", "1 while each of serve's processes runs", labels=["process"])
        for name, up in self.probes.children().items():
            alive.add_metric([name], 1.0 if up else 0.0)
        yield from (last, failing, alive)
        info = GaugeMetricFamily("mailgate_daemon_info", "This daemon: its name in the cluster (join on instance)",
                                 labels=["daemon", "host", "version"])
        info.add_metric([self.probes.daemon, socket.gethostname(), __version__], 1.0)
        held = GaugeMetricFamily("mailgate_imap_lease_held", "1 for each mailbox whose lease this daemon holds",
                                 labels=["daemon", "mailbox"])
        for name in self.probes.leases():
            held.add_metric([self.probes.daemon, name], 1.0)
        yield from (info, held)


def health(probes: Probes) -> tuple[bool, dict[str, Any]]:
    problems: list[str] = []
    if not probes.listening():
        problems.append("the SMTP listener is not bound")
    dead = [name for name, up in probes.children().items() if not up]
    if dead:
        problems.append(f"process(es) not running: {', '.join(dead)}")
    try:
        probes.database.check()
    except Exception as exc:
        problems.append(f"the database does not answer: {exc}")
    return not problems, {"status": "ok" if not problems else "unhealthy", "problems": problems}


def _app(probes: Probes, registry: Any) -> Callable[..., Iterable[bytes]]:
    from prometheus_client import make_wsgi_app

    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            ok, body = health(probes)
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics or /healthz\n"]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # every scrape is not an event
        pass


class _Threading(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class MetricsServer:
    def __init__(self, host: str, port: int, probes: Probes) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # serve called prepare() first
        registry.register(_StateCollector(probes))
        self._server = make_server(host, port, _app(probes, registry), _Threading, handler_class=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, name="mailgate-metrics", daemon=True)
        self._thread.start()
        self.started = time.monotonic()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
