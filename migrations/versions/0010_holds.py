"""Mail stored but held (spam verdicts, flood control): what a held mail was held for, and the sender
and domain of each mail that opened a ticket, indexed with the time for flood control's counts

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbound") as batch:
        batch.add_column(sa.Column("sender", sa.String(320), nullable=True))
        batch.add_column(sa.Column("sender_domain", sa.String(255), nullable=True))
        batch.add_column(sa.Column("hold", sa.String(16), nullable=True))
    # partial: only mail flood control counted has a sender, so without it the indexes cost a mail nothing
    indexes = (("ix_inbound_sender_received", "sender"), ("ix_inbound_sender_domain_received", "sender_domain"))
    for name, column in indexes:
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "inbound", [column, "received_at"], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    op.drop_index("ix_inbound_sender_domain_received", table_name="inbound")
    op.drop_index("ix_inbound_sender_received", table_name="inbound")
    with op.batch_alter_table("inbound") as batch:
        batch.drop_column("hold")
        batch.drop_column("sender_domain")
        batch.drop_column("sender")
