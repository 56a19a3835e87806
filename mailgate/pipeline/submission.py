"""Mail we composed ourselves for another channel (HTTP API, contact form, staff entering a call).

Every channel makes its ticket the same way mail does: the adapter composes an RFC 5322 mail from
the request and hands it to the same ``ingest``, so rules, SLA, dedupe, holds and notifications are
the ones mail gets. What a mail cannot say (the ticket a message is for, the agent who wrote it or
took the call, a chosen priority or help topic, custom fields, no acknowledgment) travels in one
header, ``X-Mailgate-Submission``, as JSON in base64.

That header is believed only of mail whose *source* is one of our channels (``CHANNEL_SOURCES``):
the source is set by the adapter that received it and stored with the mail, never read from it, so
the same header on mail from SMTP, IMAP or a pipe is ignored, and a held mail released later keeps
the source it arrived by. A channel's caller is authenticated by the channel (an API key, the
signed link of a status page, a shell on the server), not by anything in the mail.

What the header may not do is as important: a message for a ticket is refused unless its author
is the requester or a collaborator of that ticket, or an agent the channel vouches for. A guessed
ticket number makes nobody a participant (mail's ``stranger_reply`` policy does not apply here).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from mailgate.domain import Change, Priority, RawMail, Role, RouteDecision, Sender, ThreadMatch
from mailgate.pipeline.apply import Writer, event_row
from mailgate.storage.model import Event
from mailgate.storage.store import Store

HEADER = "X-Mailgate-Submission"
CHANNEL_SOURCES = frozenset({"api", "form", "cli"})
# the ways a staff member may say a ticket reached them (``tickets open --channel``, the API's ``channel``)
STAFF_CHANNELS = ("phone", "in_person", "chat", "letter", "other")
# reasons the adapters turn into answers (HTTP status, exit code); the words are what users read
NO_TICKET = "no such ticket"
NOT_PARTICIPANT = "is not a participant of this ticket"
KEY_REUSED = "the Idempotency-Key was already used for a different request"
NOT_A_CUSTOMER = "is one of our own addresses or agents, not a customer"


@dataclass(frozen=True)
class Submission:
    """What the channel vouches for, beside the mail it composed."""

    channel: str  # api, form, or a staff channel (phone, in_person, ...)
    client: str = ""  # the API key's name, "form", or "cli"
    ticket: str | None = None  # a message for this ticket's number; None: a new ticket
    agent: str | None = None  # the agent who wrote the message, or who entered the ticket for the requester
    note: bool = False  # an agent's internal note, never sent to the customer
    priority: str | None = None
    help_topic: str | None = None
    fields: tuple[tuple[str, str], ...] = field(default=())
    ack: bool = True  # acknowledge the requester (a staff entry may say no)
    idempotent: bool = False  # the Message-ID comes from the client's Idempotency-Key

    def encode(self) -> str:
        data: dict[str, Any] = {"channel": self.channel, "client": self.client}
        for name in ("ticket", "agent", "priority", "help_topic"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.note:
            data["note"] = True
        if self.fields:
            data["fields"] = dict(self.fields)
        if not self.ack:
            data["ack"] = False
        if self.idempotent:
            data["idempotent"] = True
        text = json.dumps(data, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
        # base64 in words of 60, so the header folds between words and is never RFC 2047-encoded
        coded = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
        return " ".join(coded[i : i + 60] for i in range(0, len(coded), 60))

    @classmethod
    def decode(cls, text: str) -> Submission:
        coded = "".join(text.split())
        data = json.loads(base64.urlsafe_b64decode(coded + "=" * (-len(coded) % 4)))
        return cls(
            channel=str(data["channel"]),
            client=str(data.get("client", "")),
            ticket=data.get("ticket"),
            agent=data.get("agent"),
            note=bool(data.get("note", False)),
            priority=data.get("priority"),
            help_topic=data.get("help_topic"),
            fields=tuple((str(k), str(v)) for k, v in dict(data.get("fields") or {}).items()),
            ack=bool(data.get("ack", True)),
            idempotent=bool(data.get("idempotent", False)),
        )


def read(raw: RawMail, origin: str) -> Submission | None:
    """The submission a channel's mail carries; None for any other mail, whatever its headers say."""
    if origin not in CHANNEL_SOURCES:
        return None
    end = bytes(raw[:65536]).find(b"\n\n")
    crlf = bytes(raw[:65536]).find(b"\r\n\r\n")
    cut = min(x for x in (end, crlf, 65536) if x >= 0)
    value = BytesHeaderParser(policy=compat32).parsebytes(bytes(raw[:cut])).get(HEADER)
    if value is None:
        return None
    return Submission.decode(str(value))


def thread(store: Store, sub: Submission) -> ThreadMatch | None:
    """The ticket a message names; ``None`` for a new ticket. A number that is not there is refused
    later (``refusal``), never taken as a new ticket: the caller asked to add to one."""
    if sub.ticket is None:
        return None
    ticket = store.ticket_by_number(sub.ticket)
    return ThreadMatch(ticket.id if ticket else None, "submission", sub.ticket)


def sender(sub: Submission | None, found: Sender, agents: dict[str, str]) -> Sender:
    """The agent the channel vouches for is an authenticated agent; anyone else is who the mail says."""
    if sub is None or sub.agent is None or sub.ticket is None:
        return found
    return Sender(sub.agent, Role.AGENT, None, agents.get(sub.agent, found.name), authenticated=True,
                  reason=f"{sub.channel} ({sub.client})")


def refusal(sub: Submission | None, match: ThreadMatch, who: Sender, store: Store, own: frozenset[str],
            agents: dict[str, str], message_id: str | None, inbound_id: int) -> str | None:
    """Why the channel's mail is refused, or None. Checked before anything is written."""
    if sub is None:
        return None
    if sub.idempotent and message_id and store.message_id_taken(message_id, inbound_id):
        return KEY_REUSED  # the same key with the same request was a duplicate (dedupe) before this
    if sub.ticket is not None:
        if match.ticket_id is None:
            return f"{NO_TICKET}: {sub.ticket}"
        if who.role is Role.AGENT and who.authenticated:
            return None
        if who.role in (Role.REQUESTER, Role.COLLABORATOR):
            return None
        return f"{who.address or 'the sender'} {NOT_PARTICIPANT} ({sub.ticket})"
    if who.address in own or who.address in agents:
        return f"the requester {who.address} {NOT_A_CUSTOMER}"
    return None


def channel_name(sub: Submission | None) -> str:
    """The rules' ``channel`` field."""
    return sub.channel if sub is not None else "email"


def chosen_topic(sub: Submission | None) -> str | None:
    return sub.help_topic if sub is not None else None


def by_agent(sub: Submission | None) -> bool:
    """An agent entered it or wrote it: never held for flood or spam, as an agent's own mail is not."""
    return sub is not None and sub.agent is not None


def is_note(sub: Submission | None) -> bool:
    return sub is not None and sub.note


def decided(sub: Submission | None, decision: RouteDecision) -> RouteDecision:
    """A priority the caller chose wins over the rules'; a staff entry may ask for no acknowledgment."""
    if sub is None:
        return decision
    changes = list(decision.changes)
    if sub.priority is not None and sub.priority != decision.priority.value:
        changes.append(f"{sub.channel} set priority={sub.priority}")
        decision = replace(decision, priority=Priority(sub.priority))
    if not sub.ack and not decision.no_autoreply:
        changes.append(f"{sub.channel} asked for no acknowledgment")
        decision = replace(decision, no_autoreply=True)
    return replace(decision, changes=tuple(changes))


def recorded(w: Writer, change: Change, sub: Submission | None) -> None:
    """Events on the ticket: how it came in and who entered it, and the custom fields the caller gave."""
    if sub is None:
        return
    actor = sub.agent or "system"
    rows = []
    if change.created:
        by = f" by {sub.agent}" if sub.agent else ""
        rows.append(event_row(w, change.ticket_id, "channel", f"{sub.channel}{by} ({sub.client})", actor))
    rows += [event_row(w, change.ticket_id, "field", f"{name}={value}", actor) for name, value in sub.fields]
    w.store.add_rows(Event, rows)
