"""``tickets list`` on the database driver alone: the one listing an admin types all day starts in a
fraction of the time SQLAlchemy and the configuration models take to import.

Only what it shows is read here (number, status, priority, requester, subject); the JSON form and
every other view go through ``views.py``. Like them it never creates, migrates or writes.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from mailgate.errors import ConfigError, TempFail
from mailgate.storage.refusal import misconfigured
from mailgate.storage.revision import require, require_sqlite_file

# a merged ticket is closed; the listing says why (its survivor: ``tickets show``)
_TICKETS = ("SELECT number, CASE WHEN merged_into IS NULL THEN status ELSE 'closed (merged)' END, priority, "
            "requester_email, subject FROM ticket{where} ORDER BY id{page}")
_COUNT = "SELECT count(*) FROM ticket{where}"
# tickets list's filters: option -> column (each column has an index in ticket order, migration 0008)
FILTERS = {"status": "status", "topic": "help_topic", "assignee": "assignee", "requester": "requester_email"}


@dataclass(frozen=True)
class Page:
    """Which tickets to list: ``where`` maps columns to the values asked for; ``limit`` None is all."""

    where: dict[str, str] = field(default_factory=dict)
    limit: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class Listing:
    rows: list[tuple[str, str, str, str, str]]
    total: int  # how many match, whatever the page


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


def ticket_rows(url: str, page: Page) -> Listing:
    """The page of tickets, oldest first; a schema older than this mailgate's is an error naming ``db upgrade``."""
    with closing(_connect(url)) as conn, closing(conn.cursor()) as cur:
        try:
            cur.execute("SELECT version_num FROM alembic_version")
            row = cur.fetchone()
        except Exception:  # no such table: not a mailgate database yet (sqlite3 and psycopg differ here)
            row = None
        require(row[0] if row else None, url.split("@")[-1])
        marker = "?" if url.startswith("sqlite") else "%s"
        where = " AND ".join(f"{column} = {marker}" for column in page.where)
        where = f" WHERE {where}" if where else ""
        values = tuple(page.where.values())
        bounds = "" if page.limit is None else f" LIMIT {int(page.limit)} OFFSET {int(page.offset)}"
        if page.limit is None and page.offset:
            bounds = f" LIMIT -1 OFFSET {int(page.offset)}" if marker == "?" else f" OFFSET {int(page.offset)}"
        cur.execute(_TICKETS.format(where=where, page=bounds), values)
        rows = [tuple(r) for r in cur.fetchall()]
        total = len(rows) + page.offset
        if page.limit is not None and len(rows) >= page.limit:
            cur.execute(_COUNT.format(where=where), values)
            total = int(cur.fetchone()[0])
        return Listing(rows, total)
