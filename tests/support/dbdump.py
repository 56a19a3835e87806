"""Every row of every table of a mailgate database as text, for "nothing changed" and "no trace left" checks.

Read through SQLAlchemy's reflection, so SQLite and PostgreSQL dump alike and a table added by a
migration is never missed; bytes (the raw mail) are decoded as Latin-1, so a search for an address finds
it in a mail's headers and body too.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from mailgate.config import load_config


def dump(config: Path) -> str:
    engine = sa.create_engine(load_config(config).database_url)
    lines: list[str] = []
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            for table in sorted(meta.tables.values(), key=lambda t: t.name):
                order = list(table.primary_key.columns) or list(table.columns)
                for row in conn.execute(sa.select(table).order_by(*order)):
                    lines.append(f"{table.name}: " + " | ".join(_cell(v) for v in row))
    finally:
        engine.dispose()
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, memoryview):
        value = bytes(value)
    return value.decode("latin-1") if isinstance(value, bytes) else repr(value)
