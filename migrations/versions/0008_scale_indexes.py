"""Indexes for a large database: a ticket's thread references, outbox rows and received mails by ticket,
tickets by creation time (reports by period) and the listing's filters in ticket order

Without ``thread_ref.ticket_id`` every reply read the whole table (32 ms a mail at 100k tickets).
The single-column indexes on ticket.status and ticket.requester_email go: the (column, id) pairs
serve every lookup they served, and each index is paid for on every new ticket.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = [
    ("ix_thread_ref_ticket_id", "thread_ref", ["ticket_id"]),
    ("ix_outbox_ticket_id", "outbox", ["ticket_id"]),
    ("ix_inbound_ticket_id", "inbound", ["ticket_id"]),
    ("ix_ticket_created_at", "ticket", ["created_at"]),
    ("ix_ticket_status_id", "ticket", ["status", "id"]),
    ("ix_ticket_help_topic_id", "ticket", ["help_topic", "id"]),
    ("ix_ticket_assignee_id", "ticket", ["assignee", "id"]),
    ("ix_ticket_requester_id", "ticket", ["requester_email", "id"]),
]


REPLACED = [("ix_ticket_status", "ticket", ["status"]), ("ix_ticket_requester_email", "ticket", ["requester_email"])]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    for name, table, _ in REPLACED:
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    for name, table, columns in REPLACED:
        op.create_index(name, table, columns)
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
