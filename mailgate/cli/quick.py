"""``tickets list`` on the database driver alone: the one listing an admin types all day starts in a
fraction of the time SQLAlchemy and the configuration models take to import.

Only what it shows is read here (number, status, priority, requester, subject); the JSON form and
every other view go through ``views.py``. Like them it never creates, migrates or writes.
"""

from __future__ import annotations

from contextlib import closing
from typing import Any

from mailgate.errors import ConfigError, TempFail
from mailgate.storage.refusal import misconfigured
from mailgate.storage.revision import require, require_sqlite_file

_TICKETS = "SELECT number, status, priority, requester_email, subject FROM ticket{where} ORDER BY id"


def _connect(url: str) -> Any:
    scheme, _, rest = url.partition("://")
    if scheme.startswith("sqlite"):
        import sqlite3

        path = rest[1:] if rest.startswith("/") else rest
        require_sqlite_file(path)
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    import psycopg

    try:
        return psycopg.connect(f"postgresql://{rest}", connect_timeout=5)
    except psycopg.OperationalError as exc:
        if problem := misconfigured(exc):
            raise ConfigError(f"database.url: {problem}") from exc
        raise TempFail(f"database unavailable: {exc}") from exc


def ticket_rows(url: str, status: str | None) -> list[tuple[str, str, str, str, str]]:
    """The tickets, oldest first; a schema older than this mailgate's is an error naming ``db upgrade``."""
    with closing(_connect(url)) as conn, closing(conn.cursor()) as cur:
        try:
            cur.execute("SELECT version_num FROM alembic_version")
            row = cur.fetchone()
        except Exception:  # no such table: not a mailgate database yet (sqlite3 and psycopg differ here)
            row = None
        require(row[0] if row else None, url.split("@")[-1])
        marker = "?" if url.startswith("sqlite") else "%s"
        cur.execute(_TICKETS.format(where=f" WHERE status = {marker}" if status else ""), (status,) if status else ())
        return [tuple(r) for r in cur.fetchall()]
