"""Tickets merged into another (merged_into: mail to either number lands in the survivor) or split off
from another (split_from), and an index to find one of our outgoing mails by its Message-ID (an agent's
``#split`` names the alert it answers)

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ticket") as batch:
        batch.add_column(sa.Column("merged_into", sa.Integer, nullable=True))
        batch.add_column(sa.Column("split_from", sa.Integer, nullable=True))
        batch.create_foreign_key("fk_ticket_merged_into_ticket", "ticket", ["merged_into"], ["id"])
        batch.create_foreign_key("fk_ticket_split_from_ticket", "ticket", ["split_from"], ["id"])
    op.create_index("ix_ticket_merged_into", "ticket", ["merged_into"])
    op.create_index("ix_ticket_split_from", "ticket", ["split_from"])


def downgrade() -> None:
    op.drop_index("ix_ticket_split_from", table_name="ticket")
    op.drop_index("ix_ticket_merged_into", table_name="ticket")
    with op.batch_alter_table("ticket") as batch:
        batch.drop_constraint("fk_ticket_split_from_ticket", type_="foreignkey")
        batch.drop_constraint("fk_ticket_merged_into_ticket", type_="foreignkey")
        batch.drop_column("split_from")
        batch.drop_column("merged_into")
