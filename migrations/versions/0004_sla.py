"""SLA: ladder timers (one row per ticket, target, step) and the ticket's SLA clock

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 08:02:09.130516
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sla_timer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=20), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("plan", sa.String(length=200), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fired_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"], name=op.f("fk_sla_timer_ticket_id_ticket")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_timer")),
        sa.UniqueConstraint("ticket_id", "target", "step", name=op.f("uq_sla_timer_ticket_id_target_step")),
    )
    with op.batch_alter_table("sla_timer", schema=None) as batch_op:
        batch_op.create_index("ix_sla_timer_due", ["fired_at", "due_at"], unique=False)

    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sla_consumed", sa.Float(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("sla_running_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("first_response_breached", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("resolution_breached", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_column("resolution_breached")
        batch_op.drop_column("first_response_breached")
        batch_op.drop_column("sla_running_since")
        batch_op.drop_column("sla_consumed")

    with op.batch_alter_table("sla_timer", schema=None) as batch_op:
        batch_op.drop_index("ix_sla_timer_due")

    op.drop_table("sla_timer")
