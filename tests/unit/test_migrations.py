"""The Alembic migrations create exactly the schema the ORM models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mailgate.pipeline.ingest import Context
from mailgate.storage.model import Base


def test_migrated_database_matches_the_models(ctx: Context) -> None:
    with ctx.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(ctx: Context) -> None:
    ctx.db.upgrade()  # serve runs it at every start
    with ctx.db.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is not None
