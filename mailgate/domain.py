"""Values passed between pipeline stages: enums and frozen dataclasses, no ORM.

Keeping these immutable means a stage can only influence the next one through
its return value, so the flow in ``pipeline/ingest.py`` is the whole story.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal


class Status(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    AWAITING_REPLY = "awaiting_reply"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    EMERGENCY = "emergency"


class Kind(StrEnum):
    """What a mail is, judged from the mail alone (``classify``)."""

    NEW = "new"
    REPLY = "reply"
    BOUNCE = "bounce"
    AUTO_REPLY = "auto_reply"
    LOOP = "loop"


class Role(StrEnum):
    REQUESTER = "requester"
    COLLABORATOR = "collaborator"
    AGENT = "agent"
    STRANGER = "stranger"


class MessageKind(StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    NOTE = "note"
    SYSTEM = "system"


class InboundStatus(StrEnum):
    """What became of one received mail; every spooled row ends in one of these."""

    RECEIVED = "received"
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"
    DISCARDED = "discarded"  # a rule said so: kept with its bytes, no ticket, nothing sent
    REPROCESSED = "reprocessed"


NOTIFICATION_KINDS = (
    "ack_new",
    "alert_new",
    "alert_message",
    "agent_reply",
    "notice_status",
    "alert_assigned",
    "alert_note",
    "command_error",
    "rejected",
    "sla_warning",
    "sla_overdue",
    "reminder",
    "notice_closed",  # the requester closed their ticket by mail (pipeline/customer_close.py)
    "alert_closed",
    "status_list",  # the answer to mail to intake.status_address (pipeline/status_request.py)
    "notice_merged",  # an agent merged the customer's ticket into another (pipeline/links.py)
    "notice_split",  # an agent split the customer's message off into a ticket of its own
    "forwarded",  # to the agent who forwarded a customer's mail: its ticket number (pipeline/forward_intake.py)
    "forward_refused",  # to that agent: the forwarded mail named no customer, and why
)


def check_kinds(value: dict[str, bool]) -> dict[str, bool]:
    """Notification switches may only name known kinds (a typo would silently switch nothing)."""
    unknown = sorted(set(value) - set(NOTIFICATION_KINDS))
    if unknown:
        raise ValueError(f"unknown notification kind(s) {', '.join(unknown)}; known: {', '.join(NOTIFICATION_KINDS)}")
    return value


def shown(value: object) -> str:
    """A value as a person reads it in an event or a log: ``none``, never Python's ``None``."""
    return "none" if value is None or value == "" else str(value)


Source = Literal["smtp", "lmtp", "imap", "pipe", "reprocess", "api", "form", "cli"]
# A received mail's bytes. The listener and the pipeline process hand a big mail on in the buffer it
# was read into (a bytearray) rather than copy it into bytes: nothing downstream changes it.
RawMail = bytes | bytearray


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    source: Source
    received_at: datetime
    peer: str = ""
    mailbox: str | None = None  # IMAP account name, for its default help topic
    lease_token: int | None = None  # the mailbox lease it was fetched under: stored only while it holds


@dataclass(frozen=True, slots=True)
class Address:
    email: str  # lower-cased addr-spec
    name: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes = field(repr=False)
    sha256: str
    inline: bool = False

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class ParsedMail:
    message_id: str | None
    sha256: str  # of the content without transport headers: same mail via two routes hashes alike
    subject: str
    from_addr: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    date: datetime | None
    text: str
    html: str | None  # sanitised; never active content
    new_text: str  # the text above any quoted history, without the sender's signature
    attachments: tuple[Attachment, ...]
    auto_headers: tuple[tuple[str, str], ...]  # headers that matter for loop/auto-reply detection
    content_type: str = "text/plain"
    defects: tuple[str, ...] = ()
    loop_token: str | None = None  # X-Mailgate-Loop as received (already stripped from headers)
    raw_headers: tuple[tuple[str, str], ...] = ()  # undecoded, for header:<Name> rule conditions
    sender: Address | None = None  # the Sender header: who sent it for From (used when From is missing)
    unsigned: str = ""  # the whole text without the sender's signature ("" when not yet made: apply does)


@dataclass(frozen=True, slots=True)
class Classification:
    kind: Kind
    reason: str
    bounced: frozenset[str] = frozenset()

    @property
    def automatic(self) -> bool:
        """Machine-sent mail: stored, but never answered automatically."""
        return self.kind in (Kind.BOUNCE, Kind.AUTO_REPLY, Kind.LOOP)


@dataclass(frozen=True, slots=True)
class ThreadMatch:
    ticket_id: int | None
    via: Literal["token", "tag", "foreign_tag", "in_reply_to", "references", "submission", "none"]
    number: str | None = None
    signed: bool = False  # found through our own signed reply address or Message-ID, not a guessable value
    merged: tuple[tuple[int, str], ...] = ()  # (id, number) of merged tickets the mail named, passed on the way


@dataclass(frozen=True, slots=True)
class Sender:
    address: str
    role: Role
    agent_id: int | None = None
    name: str = ""
    authenticated: bool = False  # agents only: how it was proven is in ``reason``
    reason: str = ""  # why this role; a non-empty reason on a non-agent is worth an alert


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    arg: str


@dataclass(frozen=True, slots=True)
class RuleTrace:
    name: str
    matched: bool
    reason: str


RouteAction = Literal["accept", "reject", "discard", "quarantine"]


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where a mail goes and what happens to it; ``action`` says whether it becomes/joins a ticket at all."""

    help_topic: str | None
    department: str | None
    priority: Priority
    sla_plan: str | None
    assignee: str | None  # an agent's address; None while assign_strategy still has to choose one
    no_autoreply: bool = False
    help_topic_via: str = "none"
    trace: tuple[RuleTrace, ...] = ()
    reject: str | None = None  # the polite bounce text; set exactly when action == "reject"
    changes: tuple[str, ...] = ()  # "rule vip set priority=high", recorded on the ticket
    action: RouteAction = "accept"
    quarantine: str | None = None  # the reason; set exactly when action == "quarantine"
    team: str | None = None
    tags: tuple[str, ...] = ()
    status: Status | None = None  # None: the usual status (open for a new ticket)
    collaborators: tuple[str, ...] = ()  # addresses to add as collaborators (cc'd on replies)
    canned_reply: str | None = None  # template name: templates/<name>.txt.j2, sent to the requester
    assign_strategy: Literal["round_robin", "least_loaded"] | None = None  # pick an agent of assign_team
    assign_team: str | None = None
    ack_template: str = "ack_new"  # the help topic's acknowledgment template
    matched: tuple[str, ...] = ()  # the rules that matched, in file order (kept in the decision record)


@dataclass(frozen=True, slots=True)
class TicketLink:
    """An agent's ``#merge`` or ``#split`` (pipeline/links.py): carried out, or refused and why."""

    command: Literal["merge", "split"]
    ticket: str  # the number of the ticket the mail was about
    other: str | None = None  # merged into / split off as (None when refused before one was known)
    detail: str = ""  # what moved, in words
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    ticket_id: int
    number: str
    created: bool
    reopened: bool
    message_kind: MessageKind
    events: tuple[str, ...] = ()
    status_changed: str | None = None  # the new status, when this mail changed it
    assigned_to: str | None = None
    transferred_to: str | None = None
    command_errors: tuple[str, ...] = ()
    text: str = ""  # what the mail said, as stored (commands and quotes removed)
    collaborators: tuple[Address, ...] | None = None  # a new ticket's, as written: notify need not read them back
    link: TicketLink | None = None  # a #merge or #split this mail carried out or was refused


@dataclass(frozen=True, slots=True)
class Notification:
    kind: str
    to: tuple[str, ...]
    ticket_id: int
    dedupe_key: str
    subject: str
    text: str
    html: str | None
    message_id: str
    in_reply_to: str | None
    references: tuple[str, ...]
    auto_submitted: str  # RFC 3834 value: auto-replied | auto-generated
    automatic: bool = True  # False for a human's words relayed (agent replies): not rate-limited
    headers: tuple[tuple[str, str], ...] = ()  # Reply-To, Thread-Topic, Thread-Index, Auto-Submitted
    attachments: tuple[tuple[str, str, str], ...] = ()  # (sha256, filename, content type) relayed from a reply


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Literal["accepted", "duplicate", "quarantined", "rejected"]
    number: str | None = None
    reason: str | None = None
    inbound_id: int | None = None
    trace: tuple[RuleTrace, ...] = ()
    notifications: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (kind, recipients) for dry runs
    route: RouteDecision | None = None
    message_id: str | None = None
    thread: str = ""  # how it found its ticket: new, token, tag, in_reply_to, references ("" when it did not)
    decision: dict[str, Any] | None = None  # the decision record (trail.py), for dry runs to show
