"""Shared fixtures: real files, real sockets, a real database (SQLite, or PostgreSQL when
``MAILGATE_TEST_DATABASE_URL`` is set), a real outbound SMTP sink and a private Dovecot.

``make_config`` writes a complete config directory per test (copies of the demo's
rules/agents/SLA files, a free SMTP port, its own state dir), so every test runs
against the same shapes an admin edits.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from mailgate.clock import FixedClock
from mailgate.config import load_config
from mailgate.daemon.context import build_context
from mailgate.pipeline.ingest import Context
from tests.support.browser import browser  # noqa: F401  (a fixture: pytest finds it by its name here)
from tests.support.dovecot_fixture import DovecotServer, DovecotUnavailable

# The ceiling for every wait on an event (a socket, a log line, a row, a process's exit). Waits end when
# the event comes, so a generous ceiling costs nothing on a quick machine and saves a loaded one.
PATIENCE = float(os.environ.get("MAILGATE_TEST_PATIENCE", "180"))
REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus"
PG_URL = os.environ.get("MAILGATE_TEST_DATABASE_URL")


def free_port() -> int:
    """A port that was free a moment ago, from this test worker's own range.

    Asking the kernel for port 0 hands out ports from its ephemeral range, the same range every
    outgoing connection draws from, and two test workers (pytest-xdist) could be given the same one
    between closing it and a daemon binding it. Each worker instead tries ports of its own, below
    the ephemeral range.
    """
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    low = 10_000 + (worker % 4) * 5_000
    for _ in range(200):
        port = low + secrets.randbelow(5_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{low + 4999}")


# --------------------------------------------------------------------------- database
@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database per test: a SQLite file, or a PostgreSQL schema of its own."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path / 'state' / 'mailgate.db'}"
        return
    import sqlalchemy as sa

    schema = f"mg_{secrets.token_hex(6)}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


# --------------------------------------------------------------------------- config
MakeConfig = Callable[..., Path]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def make_config(tmp_path: Path, db_url: str) -> MakeConfig:
    """Write a config dir; keyword arguments are deep-merged into mailgate.yaml.

    ``rules=``/``agents=``/``sla=`` replace those files' content (as dicts).
    """

    def make(
        *, rules: dict[str, Any] | None = None, agents: dict[str, Any] | None = None,
        sla: dict[str, Any] | None = None, **main: Any,
    ) -> Path:
        folder = tmp_path / "config"
        folder.mkdir(exist_ok=True)
        for name, content in (("rules.yaml", rules), ("agents.yaml", agents), ("sla.yaml", sla)):
            if content is None:
                shutil.copy(REPO / "config" / name, folder / name)
            else:
                (folder / name).write_text(yaml.safe_dump(content, sort_keys=False))
        base: dict[str, Any] = {
            "state_dir": str(tmp_path / "state"),
            "database": {"url": db_url},
            "intake": {
                "addresses": ["support@example.com", "outage@example.com"],
                "smtp": {"listen": f"127.0.0.1:{free_port()}", "lmtp": False, "max_message_size": "25MiB"},
                "imap": [],
            },
            "outbound": {"from": "Example Support <support@example.com>", "transport": "maildir",
                         "maildir": str(tmp_path / "outgoing"), "retry": {"first": "1s", "maximum": "4s"}},
            "scheduler": {"outbox_interval": "1s"},
            "tickets": {"number_format": "######", "subject_tag": "[#{number}]"},
            "rules": "rules.yaml",
            "agents": "agents.yaml",
            "sla": "sla.yaml",
            "templates": str(REPO / "templates"),
        }
        path = folder / "mailgate.yaml"
        path.write_text(yaml.safe_dump(_merge(base, main), sort_keys=False))
        return path

    return make


@pytest.fixture
def config_path(make_config: MakeConfig) -> Path:
    return make_config()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def ctx(config_path: Path, clock: FixedClock) -> Iterator[Context]:
    """An in-process Context on a migrated database, with a clock tests can move."""
    context = build_context(load_config(config_path), clock)
    context.db.upgrade()
    yield context
    context.db.dispose()


# --------------------------------------------------------------------------- CLI
@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(config: Path, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> CliResult:
    """Run ``python -m mailgate`` as a user would (a real process, real files)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mailgate", *args, "-c", str(config)],
        input=stdin, capture_output=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO,
    )
    return CliResult(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))


@pytest.fixture
def cli(config_path: Path) -> Callable[..., CliResult]:
    return lambda *args, **kw: run_cli(config_path, *args, **kw)


# --------------------------------------------------------------------------- serve
@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    config: Path
    host: str
    port: int
    log: Path

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP(self.host, self.port, timeout=PATIENCE)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = PATIENCE) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for_smtp(host: str, port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mailgate exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                if sock.recv(3) == b"220":
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered on {host}:{port}")


def start_service(config: Path, log: Path, env: dict[str, str] | None = None) -> Service:
    cfg = load_config(config)
    smtp = cfg.main.intake.smtp
    assert smtp is not None
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "-c", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO)
    service = Service(proc, config, smtp.host, smtp.port, log)
    try:
        wait_for_smtp(smtp.host, smtp.port, proc)
    except Exception:
        service.stop(signal.SIGKILL)
        raise RuntimeError(f"serve did not start:\n{log.read_text(errors='replace')}") from None
    return service


@pytest.fixture
def service(config_path: Path, tmp_path: Path) -> Iterator[Service]:
    svc = start_service(config_path, tmp_path / "serve.log")
    yield svc
    if svc.proc.poll() is None:
        svc.stop()


# --------------------------------------------------------------------------- outbound sink
@dataclass
class SinkMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class SmtpSink:
    """A real aiosmtpd server on loopback that keeps what it is sent (or refuses on demand)."""

    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    messages: list[SinkMessage] = field(default_factory=list)
    answer: str | None = None  # e.g. "451 4.3.0 try later" to simulate a relay in trouble
    _controller: Controller | None = None
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.answer:
            return self.answer
        with self._arrived:
            self.messages.append(SinkMessage(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            self._arrived.notify_all()
        return "250 OK"

    def start(self) -> SmtpSink:
        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, count: int, timeout: float = PATIENCE) -> list[SinkMessage]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"sink got {len(self.messages)} of {count} messages")
                self._arrived.wait(left)
            return list(self.messages)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


# --------------------------------------------------------------------------- dovecot
@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    try:
        server = DovecotServer().start()
    except DovecotUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Dovecot is required in CI: {exc}")
        pytest.skip(str(exc))
    yield server
    server.stop()


# --------------------------------------------------------------------------- e2e helpers: mail in, tickets and mail out
def make_mail(
    subject: str = "Printer on fire", *, sender: str = "Pat <pat@customer.example>", to: str = "support@example.com",
    message_id: str | None = None, body: str = "Help, it burns.", headers: dict[str, str] | None = None,
) -> bytes:
    """A small RFC 5322 message as a customer's client would send it (CRLF line ends)."""
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", "Date: Mon, 02 Mar 2026 10:00:00 +0100"]
    if message_id:
        lines.append(f"Message-ID: {message_id}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def cli_json(config: Path, *args: str) -> Any:
    """Run a read-only ``mailgate ... --json`` command and return its parsed output."""
    import json

    result = run_cli(config, *args, "--json")
    assert result.code == 0, f"mailgate {' '.join(args)} exited {result.code}: {result.stderr}"
    return json.loads(result.stdout)


def outgoing_mail(config: Path) -> list[Any]:
    """Every mail the Maildir transport has written so far, oldest first, parsed (policy.default)."""
    import email
    from email import policy

    folder = load_config(config).main.outbound.maildir
    assert folder is not None
    files = [p for sub in ("new", "cur") if (folder / sub).is_dir() for p in (folder / sub).iterdir()]
    files.sort(key=lambda p: p.name)
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in files]


def wait_until(predicate: Callable[[], Any], *, timeout: float = PATIENCE, what: str = "condition",
               log: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy (and return that); fail with ``what`` and the log."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n--- serve log ---\n{log()}" if log is not None else ""
            raise AssertionError(f"timed out waiting for {what}{detail}")
        time.sleep(0.1)


def outgoing_to(config: Path, address: str = "pat@customer.example") -> list[Any]:
    """The outgoing mails addressed to ``address`` (a customer), leaving out alerts to agents."""
    return [m for m in outgoing_mail(config) if address in {a.addr_spec for a in m["To"].addresses}]


def wait_for_outgoing(config: Path, count: int, service: Service | None = None, timeout: float = PATIENCE,
                      to: str = "pat@customer.example") -> list[Any]:
    """Wait until the outgoing Maildir holds at least ``count`` mails to ``to``; return those."""
    return list(wait_until(lambda: (m := outgoing_to(config, to)) and len(m) >= count and m, timeout=timeout,
                           what=f"{count} outgoing mail(s) to {to}", log=service.output if service else None))


def smtp_deliver(host: str, port: int, raw: bytes, *, mail_from: str = "pat@customer.example",
                 rcpts: tuple[str, ...] = ("support@example.com",), timeout: float = PATIENCE) -> tuple[int, str]:
    """One SMTP transaction with smtplib; return the server's final (code, text) for DATA.

    Refused recipients are skipped; if none is left the RCPT answer is returned instead.
    """
    with smtplib.SMTP(host, port, timeout=timeout) as client:
        client.ehlo("client.example")
        code, text = client.mail(mail_from)
        if code != 250:
            return code, text.decode(errors="replace")
        answers = [client.rcpt(r) for r in rcpts]
        if not any(c in (250, 251) for c, _ in answers):
            return answers[-1][0], answers[-1][1].decode(errors="replace")
        code, text = client.data(raw)
        return code, text.decode(errors="replace")


def sql_rows(config: Path, query: str) -> list[tuple[Any, ...]]:
    """Read the daemon's database directly (SQLite file or PostgreSQL schema), for durability checks."""
    import sqlalchemy as sa

    engine = sa.create_engine(load_config(config).database_url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(query)]
    finally:
        engine.dispose()


class DatabaseLocked:
    """Hold the database's write lock from outside mailgate, as another process could.

    SQLite: a connection in ``BEGIN EXCLUSIVE``. PostgreSQL: ``LOCK TABLE inbound`` in a
    transaction of its own (held by a thread, so the test can talk to serve meanwhile).
    Use as ``with DatabaseLocked(config): ...``; the lock is released on exit.
    """

    def __init__(self, config: Path, table: str = "inbound") -> None:
        self.url = load_config(config).database_url
        self.table = table
        self._release = threading.Event()
        self._held = threading.Event()
        self._thread: threading.Thread | None = None
        self._sqlite: Any = None

    def _hold_table(self) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
                self._held.set()
                self._release.wait(300)
                conn.rollback()
        finally:
            engine.dispose()

    def __enter__(self) -> DatabaseLocked:
        if self.url.startswith("sqlite"):
            import sqlite3

            self._sqlite = sqlite3.connect(self.url.split("///", 1)[1], isolation_level=None, timeout=PATIENCE)
            self._sqlite.execute("BEGIN EXCLUSIVE")
            return self
        self._thread = threading.Thread(target=self._hold_table, name="test-database-lock")
        self._thread.start()
        assert self._held.wait(120), f"could not lock the {self.table} table"
        return self

    def __exit__(self, *exc: object) -> None:
        """Release the lock (a second call does nothing)."""
        if self._sqlite is not None:
            self._sqlite.rollback()
            self._sqlite.close()
            self._sqlite = None
        if self._thread is not None:
            self._release.set()
            self._thread.join(120)
            self._thread = None
