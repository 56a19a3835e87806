"""Several daemons on one database: who is alive (``daemon``) and who reads which IMAP mailbox
(``mailbox_lease``, with a fencing token that grows with every change of holder)

Times of both tables are seconds since the epoch on the database's own clock, so that daemons on
machines whose clocks disagree still agree on who holds what.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "daemon",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("machine", sa.String(200), nullable=False, server_default=""),  # boot id + PID namespace
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("stopped", sa.Float(), nullable=True),
        sa.Column("holds", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("settings", sa.Text(), nullable=False, server_default="{}"),  # what must match across daemons
    )
    op.create_table(
        "mailbox_lease",
        sa.Column("mailbox", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.Column("acquired", sa.Float(), nullable=False),
    )


    # a daemon that must send an attachment another daemon received finds its mail by the file's hash
    op.create_index("ix_attachment_sha256", "attachment", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_attachment_sha256", table_name="attachment")
    op.drop_table("mailbox_lease")
    op.drop_table("daemon")
