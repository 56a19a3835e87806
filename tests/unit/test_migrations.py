"""The Alembic migrations create exactly the schema the ORM models describe."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mailgate.pipeline.ingest import Context
from mailgate.storage.model import Base
from tests.conftest import PG_URL, CliResult, run_cli


def test_migrated_database_matches_the_models(ctx: Context) -> None:
    with ctx.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(ctx: Context) -> None:
    ctx.db.upgrade()  # serve runs it at every start
    with ctx.db.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is not None


@pytest.mark.skipif(not PG_URL, reason="several daemons share one PostgreSQL")
def test_daemons_starting_together_migrate_once_without_tripping_over_each_other(config_path: Path) -> None:
    """Each `db upgrade` is its own process, as daemons on several machines are: without the migration
    lock the second one's DDL waits on the first one's, times out, and the daemon fails to start."""
    results: list[CliResult] = []
    threads = [threading.Thread(target=lambda: results.append(run_cli(config_path, "db", "upgrade")))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert [r.code for r in results] == [0, 0, 0], [r.stderr[-600:] for r in results]
    assert run_cli(config_path, "status").code == 0  # at the newest schema: the read-only views accept it


def test_an_older_mailgate_on_a_database_a_newer_one_migrated_says_which_side_to_upgrade(
    ctx: Context, config_path: Path
) -> None:
    """A rolling upgrade half done: the old version, restarted, must not fail inside Alembic (or tell the
    admin to run `db upgrade`, which cannot help), but say that it is the one behind."""
    with ctx.db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    for command in (["serve"], ["db", "upgrade"], ["status"], ["tickets", "list"]):
        result = run_cli(config_path, *command)
        assert result.code == 1, (command, result.stderr[-800:])
        assert "newer than this mailgate's" in result.stderr and "Traceback" not in result.stderr, result.stderr
