"""Run the pipeline's prebuilt statements on the DBAPI cursor of the session's connection.

Each mail costs about eighteen small statements. Through ``Connection.execute``
each one pays roughly three times its SQL's cost again in SQLAlchemy's
per-execution work (execution context, cache-key lookup, result metadata). Here a
statement is compiled once per dialect and set of columns, with SQLAlchemy's own
compiler and its own type processors (SQLite's datetime strings, JSON,
booleans). Each execution then only converts the values and calls the cursor.
The SQL, the types and the transaction are the ones SQLAlchemy would use: same
connection, same savepoints. Database errors are raised as SQLAlchemy's
exceptions, so ``TempFail`` and quarantine see what they always saw. Anything this
module does not handle (expanding IN, a missing parameter) is left to SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


class Prepared:
    """One statement compiled for one dialect: SQL text, parameter order, type processors."""

    __slots__ = ("binds", "columns", "positional", "sql")

    def __init__(self, stmt: Executable, dialect: Dialect, keys: Sequence[str] | None) -> None:
        column_keys = list(keys) if keys is not None else None
        compiled = cast(SQLCompiler, stmt.compile(dialect=dialect, column_keys=column_keys))  # type: ignore[attr-defined]
        if compiled.literal_execute_params or compiled.post_compile_params:  # e.g. an expanding IN
            raise NotImplementedError("statement needs per-execution compilation")
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        names = list(compiled.positiontup or ()) if self.positional else list(compiled.binds)
        given = set(keys or ())
        defaults: dict[str, Any] = {c.key: c.default for c in compiled.insert_prefetch}
        defaults.update({c.key: c.onupdate for c in compiled.update_prefetch})
        self.binds: list[tuple[str, str | None, Any, Processor]] = []  # (name, parameter key, constant, processor)
        for name in names:
            bind = compiled.binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.key in given:
                self.binds.append((name, bind.key, None, processor))
            elif name in defaults:  # a column left out: its default, if it is a plain value
                default = defaults[name]
                if default is None or not default.is_scalar:
                    raise NotImplementedError(f"column {name} has a computed default")
                self.binds.append((name, None, default.arg, processor))
            elif not bind.required and bind.callable is None:  # a value fixed in the statement (LIMIT 1)
                self.binds.append((name, None, bind.value, processor))
            else:
                raise NotImplementedError(f"parameter {bind.key} not given")
        self.columns: list[Processor] = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in getattr(stmt, "exported_columns", ())
        ]

    def parameters(self, values: dict[str, Any]) -> Any:
        converted = [(n, values[k] if k is not None else c, p) for n, k, c, p in self.binds]
        if self.positional:
            return tuple(p(v) if p else v for _, v, p in converted)
        return {n: (p(v) if p else v) for n, v, p in converted}

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(p(v) if p else v for p, v in zip(self.columns, raw, strict=False))


_PREPARED: dict[tuple[str, int, tuple[str, ...] | None], Prepared | None] = {}


def _prepared(conn: Connection, stmt: Executable, keys: tuple[str, ...] | None) -> Prepared | None:
    key = (conn.dialect.name, id(stmt), keys)
    if key not in _PREPARED:
        try:
            _PREPARED[key] = Prepared(stmt, conn.dialect, keys)
        except (NotImplementedError, KeyError):
            _PREPARED[key] = None
    return _PREPARED[key]


@contextmanager
def _cursor(conn: Connection, sql: str, params: Any) -> Iterator[Any]:
    dialect = conn.dialect
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except dialect.loaded_dbapi.Error as error:
        raise sa_exc.DBAPIError.instance(sql, params, error, dialect.loaded_dbapi.Error, dialect=dialect) from error
    finally:
        cursor.close()


def fetch(conn: Connection, stmt: Executable, values: dict[str, Any]) -> list[tuple[Any, ...]]:
    """All rows of a SELECT (or INSERT ... RETURNING), converted as SQLAlchemy converts them."""
    prepared = _prepared(conn, stmt, tuple(values))
    if prepared is None:
        return [tuple(r) for r in conn.execute(stmt, values)]
    params = prepared.parameters(values)
    with _cursor(conn, prepared.sql, params) as cursor:
        cursor.execute(prepared.sql, params)
        return [prepared.row(r) for r in cursor.fetchall()]


def run(conn: Connection, stmt: Executable, rows: list[dict[str, Any]]) -> None:
    """INSERT/UPDATE/DELETE for one row or many rows with the same keys."""
    keys = tuple(rows[0])
    prepared = _prepared(conn, stmt, keys)
    if prepared is None or any(tuple(r) != keys for r in rows):
        conn.execute(stmt, rows if len(rows) > 1 else rows[0])
        return
    if len(rows) == 1:
        params = prepared.parameters(rows[0])
        with _cursor(conn, prepared.sql, params) as cursor:
            cursor.execute(prepared.sql, params)
        return
    many = [prepared.parameters(r) for r in rows]
    with _cursor(conn, prepared.sql, many) as cursor:
        cursor.executemany(prepared.sql, many)
