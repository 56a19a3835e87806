"""Engine, sessions and migrations. ``Database.transaction()`` is the only way to write.

SQLite: WAL with ``synchronous=FULL`` (a 250 means the row is on disk) and
``BEGIN IMMEDIATE`` so two writers never interleave a read-then-write
(SQLAlchemy's documented recipe for pysqlite). PostgreSQL: a small pool.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from mailgate.errors import ConfigError, TempFail
from mailgate.storage.refusal import misconfigured
from mailgate.storage.revision import migrations_dir, newest_revision, refuse_newer, require, require_sqlite_file

BUSY_TIMEOUT_MS = 5000
DISCARD_AFTER_USE = "mailgate_discard"  # set in a pooled connection's info: close it when it is given back
READONLY = "mailgate_readonly"
RELAXED = "mailgate_relaxed"  # commit without waiting for the disk (see Database.transaction)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        # 16 MiB of pages per connection (SQLite's default is 2 MiB): the upper levels of every index a
        # mail touches stay in memory as the database grows, instead of being read again each commit
        cur.execute("PRAGMA cache_size=-16384")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front (no read-then-upgrade deadlocks); readers must not, so
        # that `tickets list` or a report never waits for, or blocks, intake (WAL lets them read).
        options = conn.get_execution_options()
        if options.get(READONLY, False):
            conn.exec_driver_sql("BEGIN")
        else:
            _synchronous(conn, "NORMAL" if options.get(RELAXED, False) else "FULL")
            _begin_immediate(conn)


def _synchronous(conn: Any, level: str) -> None:
    """SQLite takes the safety level per connection and only between transactions."""
    info = conn.connection.info
    if info.get("synchronous", "FULL") != level:
        conn.connection.dbapi_connection.execute(f"PRAGMA synchronous={level}")
        info["synchronous"] = level


def _begin_immediate(conn: Any) -> None:
    """Take the write lock, polling every millisecond instead of in SQLite's busy handler.

    The busy handler sleeps in growing steps (up to 100 ms), so a transaction that queued
    behind a burst of intake would wake long after the lock was free while the group-commit
    writer, which makes way for it (``Database._make_way``), sits idle. Polling keeps that
    hand-over to about a millisecond, across processes too. Past the usual timeout the
    last attempt raises SQLAlchemy's own "database is locked", which becomes ``TempFail``.
    """
    raw = conn.connection.dbapi_connection
    raw.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    break
            time.sleep(0.001)
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # once more, through SQLAlchemy: its error is the one to raise
    finally:
        raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _postgres_timeouts(engine: Engine, idle_in_transaction: float | None) -> None:
    """Waiting for a lock is bounded as on SQLite (busy_timeout): past it the source is told to retry.

    ``idle_in_transaction``: a daemon that stops in the middle of a transaction (paused, its machine
    frozen) would keep its row locks, and with them, say, the lease of a mailbox another daemon must
    take over; the server ends such a transaction after this many seconds (its commit then fails and
    what it held is retried)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET lock_timeout = {BUSY_TIMEOUT_MS}")
            if idle_in_transaction is not None:
                cur.execute(f"SET idle_in_transaction_session_timeout = {int(idle_in_transaction * 1000)}")
        dbapi_conn.commit()

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        # A connection that sent a big mail's bytes: libpq keeps its send buffer at that size for as long
        # as the connection lives, so it is closed rather than pooled (the pool opens a new one).
        if record.info.pop(DISCARD_AFTER_USE, False):
            record.invalidate()


def is_transient(exc: BaseException) -> bool:
    """Database trouble worth retrying (locked, gone, restarting) rather than a bug of ours."""
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


class Turns:
    """Transactions other than the bulk writer's, running or waiting, per process of one daemon.

    Each process counts in its own slot of shared memory (``multiprocessing.RawArray``, no
    semaphores: a sandboxed service may have none), and a bulk writer waits while any slot is set.
    """

    def __init__(self, slots: Any = None, mine: int = 0) -> None:
        self._slots = slots if slots is not None else [0]
        self._mine = mine
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self._slots[self._mine] += 1

    def leave(self) -> None:
        with self._lock:
            self._slots[self._mine] -= 1

    def busy(self) -> bool:
        return any(self._slots)


MIGRATION_LOCK = 0x6D61696C67617465  # "mailgate": the session lock a migrating daemon holds on PostgreSQL


def _take_migration_lock(conn: Any, wait: float = 1800.0) -> None:
    """Polled rather than waited for in the server, where ``lock_timeout`` would give up after seconds
    while another daemon's migration may rightly take minutes."""
    deadline = time.monotonic() + wait
    while not conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({MIGRATION_LOCK})").scalar():
        conn.commit()
        if time.monotonic() > deadline:
            raise TempFail("another daemon has been migrating the database for 30 minutes")
        time.sleep(0.5)
    conn.commit()


class Database:
    def __init__(
        self, url: str, *, echo: bool = False, create: bool = True, idle_in_transaction: float | None = None
    ) -> None:
        """``create=False``: a read-only command's view; a database that is not there is an error, not made."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if not create:
                require_sqlite_file(path)
            if path and path != ":memory:":
                try:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:  # e.g. a full or read-only disk: the MTA must retry, not bounce
                    raise TempFail(f"database folder {Path(path).parent}: {exc.strerror or exc}") from exc
            self.engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 5})
            _sqlite_pragmas(self.engine)
        else:
            self.engine = create_engine(
                url, echo=echo, pool_size=5, max_overflow=5, pool_pre_ping=True, connect_args={"connect_timeout": 5}
            )
            _postgres_timeouts(self.engine, idle_in_transaction)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._migrated = threading.Lock()
        self._turns = Turns()

    def share_turns(self, slots: Any, mine: int) -> None:
        """Count in slot ``mine`` of ``slots``, shared by the processes of one daemon, so that a bulk
        writer in one process makes way for the outbox sender in another, too."""
        self._turns = Turns(slots, mine)

    @contextmanager
    def transaction(self, *, bulk: bool = False, relaxed: bool = False) -> Iterator[Session]:
        """One unit of work; database trouble becomes ``TempFail`` so sources keep their mail.

        ``bulk`` is the group-commit writer: SQLite's lock is not fair, and a writer that begins its
        next batch the moment it commits would starve everyone else (the outbox, the SLA sweep) for
        as long as a burst of mail lasts. So it first lets the others of this process have their turn.

        ``relaxed`` commits without waiting for the disk (SQLite ``synchronous=NORMAL`` in WAL mode,
        PostgreSQL ``synchronous_commit=off``): the commit survives a crash of mailgate, not one of the
        machine or database server. For records whose loss only means work done again, never a mail lost
        (an outbox row marked sent, which a power cut would at worst send once more).
        """
        if bulk:
            self._make_way()
        else:
            self._turns.enter()
        try:
            with self._transient_as_tempfail(), self.sessions() as session, session.begin():
                if relaxed:
                    conn = session.connection(execution_options={RELAXED: True})
                    if not self.is_sqlite:
                        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                yield session
        finally:
            if not bulk:
                self._turns.leave()

    def _make_way(self, limit: float = 0.2) -> None:
        if not self.is_sqlite:  # PostgreSQL locks rows, not the database
            return
        deadline = time.monotonic() + limit
        while self._turns.busy() and time.monotonic() < deadline:
            time.sleep(0.002)

    @contextmanager
    def _transient_as_tempfail(self) -> Iterator[None]:
        try:
            yield
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            raise TempFail(f"database unavailable: {exc.orig or exc}") from exc

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only session: on SQLite a deferred transaction that never takes the write lock."""
        with self.sessions() as session:
            session.connection(execution_options={READONLY: True})
            yield session

    def where(self) -> str:
        """The URL without its password, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def _refusal_as_config_error(self) -> Iterator[None]:
        try:
            yield
        except DBAPIError as exc:
            if problem := misconfigured(exc):
                raise ConfigError(f"database.url ({self.where()}): {problem}") from exc
            raise

    def check(self) -> None:
        """Connect once: ConfigError when the server refuses us for good, TempFail when it cannot be reached."""
        with self._transient_as_tempfail(), self._refusal_as_config_error(), self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def revision(self) -> str | None:
        """The schema the database is at (None: no mailgate tables yet), in one query."""
        with self._transient_as_tempfail(), self._refusal_as_config_error():
            try:
                with self.engine.connect() as conn:
                    version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            except (OperationalError, ProgrammingError) as exc:
                if "alembic_version" not in str(exc):
                    raise
                return None
        return str(version) if version is not None else None

    def require_current(self) -> None:
        """For read-only commands, which never migrate (that is serve's job, and ``db upgrade``'s)."""
        require(self.revision(), self.where())

    def ensure_current(self) -> None:
        """Migrate only when behind: a piped mail's ``ingest`` pays one query, not Alembic's import and run."""
        if self.revision() != newest_revision():
            self.upgrade()

    def upgrade(self) -> None:
        """Apply Alembic migrations up to head (idempotent)."""
        from alembic import command
        from alembic.config import Config as AlembicConfig

        with self._migrated, self._transient_as_tempfail(), self._refusal_as_config_error():
            cfg = AlembicConfig()
            cfg.set_main_option("script_location", str(migrations_dir()))
            cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
            with self.engine.connect() as conn:
                if not self.is_sqlite:  # several daemons starting at once: one migrates, the others wait
                    _take_migration_lock(conn)
                try:
                    refuse_newer(self.revision(), self.where())
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                    if conn.in_transaction():
                        conn.commit()
                finally:
                    if not self.is_sqlite:  # the lock is the session's: the pooled connection would keep it
                        if conn.in_transaction():
                            conn.rollback()
                        conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
                        conn.commit()

    def dispose(self) -> None:
        self.engine.dispose()
