"""The address a ticket's customer wrote to (every mail of the ticket goes out from it), and the
numbers other help desks gave imported tickets (their subject tags keep threading)

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ticket") as batch:
        batch.add_column(sa.Column("reply_address", sa.String(320), nullable=True))
    op.create_table(
        "ticket_alias",
        sa.Column("system", sa.String(40), primary_key=True),
        sa.Column("number", sa.String(64), primary_key=True),
        sa.Column("ticket_id", sa.Integer, sa.ForeignKey("ticket.id"), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("ticket_alias")
    with op.batch_alter_table("ticket") as batch:
        batch.drop_column("reply_address")
