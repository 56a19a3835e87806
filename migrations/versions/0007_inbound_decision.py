"""Each received mail keeps the record of what was decided about it (inbound.decision)

``mailgate explain`` reads it: how it was classified and threaded, who the sender was
taken to be and why, which rules matched, what was done and which mails were queued.
Mails received before this revision have none; explain says so.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.add_column(sa.Column("decision", sa.JSON(), nullable=True))
        batch_op.create_index("ix_inbound_message_id", ["message_id"])


def downgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_message_id")
        batch_op.drop_column("decision")
