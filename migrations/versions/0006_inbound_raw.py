"""A received mail's bytes in a table of their own (inbound_raw)

SQLite rewrites a whole row on every UPDATE: kept in ``inbound``, a big mail's
bytes were copied in memory at each status change. Apart, they are written once,
and a blob that ends its row can be written a slice at a time.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_raw",
        sa.Column("inbound_id", sa.Integer(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["inbound_id"], ["inbound.id"]),
        sa.PrimaryKeyConstraint("inbound_id"),
    )
    op.execute("INSERT INTO inbound_raw (inbound_id, raw) SELECT id, raw FROM inbound WHERE raw IS NOT NULL")
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.drop_column("raw")


def downgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.add_column(sa.Column("raw", sa.LargeBinary(), nullable=True))
    op.execute("UPDATE inbound SET raw = (SELECT raw FROM inbound_raw WHERE inbound_raw.inbound_id = inbound.id)")
    op.drop_table("inbound_raw")
