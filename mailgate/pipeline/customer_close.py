"""A requester closes their own ticket by mail: ``#close`` (``tickets.customer_close.words``) on a line
of its own in the new text of their reply.

Only the requester may, and only with proof that the mail is theirs. From is anyone's to write and a
ticket number is in every subject, so a From that names the requester is not enough. The proof is the
kind agents give: the reply quotes (In-Reply-To/References) our signed Message-ID of a mail we sent
*to the requester* for this ticket (each of our Message-IDs names its recipient and is shown to nobody
else, so neither a collaborator nor someone who guessed the number has one), or the receiving MX's
``Authentication-Results`` (``security.agent_authentication.authserv_ids``) pass for the requester's
domain. Machine mail (an out-of-office quoting "#close") never closes anything.

Whenever the command is not carried out, the mail goes on as the reply it would have been without
it, and the record (``trail.py``, an event on the ticket) says why. A proven requester's ``#close`` to
a ticket that is already closed stays on that ticket and reopens nothing: reopening it, or opening a
follow-up ticket, would do the opposite of what they asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from mailgate.config import AgentAuthentication, CustomerClose
from mailgate.domain import Change, Classification, MessageKind, ParsedMail, Role, Sender, Status, ThreadMatch
from mailgate.identity import Identity
from mailgate.pipeline.apply import Writer, event_row, store_message
from mailgate.pipeline.authorize import Admission, authenticated_by_mx
from mailgate.sla import timers as sla_timers
from mailgate.storage.model import Event, Ticket


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """A close word found in a mail, and what becomes of it."""

    word: str
    acts: bool  # carried out (or, on a ticket already closed, the reply kept there without reopening it)
    reason: str  # how the requester was proven, or why the command is ignored
    ticket_id: int | None = None
    number: str | None = None
    already: str | None = None  # the ticket's status when it was closed (or resolved) already


def command_in(text: str, words: Sequence[str]) -> str | None:
    """The first line of ``text`` that is a close word and nothing else (case does not matter).

    ``text`` is the mail's new text: quoted history and the signature are already cut off, so a
    "#close" in the mail being answered is never read as the customer's own.
    """
    wanted = {w.lower() for w in words}
    return next((line.strip().lower() for line in text.splitlines() if line.strip().lower() in wanted), None)


def _proof(parsed: ParsedMail, ticket: Ticket, identity: Identity, policy: AgentAuthentication) -> str | None:
    wanted = identity.recipient_hash(ticket.requester_email)
    for mid in (*parsed.in_reply_to, *parsed.references):
        signed = identity.verify_message_id(mid)
        if signed is not None and signed.ticket_id == ticket.id and signed.recipient_hash == wanted:
            return "it answers our mail to the requester (signed Message-ID)"
    how = authenticated_by_mx(parsed, ticket.requester_email, policy)
    return f"the requester's domain passed {how}" if how else None


def judge(
    parsed: ParsedMail,
    cls: Classification,
    sender: Sender,
    ticket: Ticket | None,
    identity: Identity,
    settings: CustomerClose,
    policy: AgentAuthentication,
) -> CloseRequest | None:
    """None when there is nothing to decide (the feature is off, or no close word in the new text)."""
    word = command_in(parsed.new_text, settings.words) if settings.enabled else None
    if word is None:
        return None
    if ticket is None:
        return CloseRequest(word, False, "the mail names no ticket; it is handled as a new mail")

    def ignored(why: str) -> CloseRequest:
        return CloseRequest(word, False, why, ticket.id, ticket.number)

    if sender.role is Role.AGENT:
        return ignored("an agent closes a ticket with #status closed")
    if cls.automatic:
        return ignored(f"machine-sent mail ({cls.kind.value}: {cls.reason}) never closes a ticket")
    if sender.role is not Role.REQUESTER:
        role = sender.role.value
        return ignored(f"only the requester may close ticket {ticket.number}; {sender.address} is a {role}")
    proof = _proof(parsed, ticket, identity, policy)
    if proof is None:
        return ignored(
            "From names the requester, but nothing proves the mail is theirs: it answers none of our mails to "
            "the requester and no trusted Authentication-Results passes for their domain"
        )
    if ticket.status in (Status.CLOSED.value, settings.status):
        return CloseRequest(word, True, f"{proof}; the ticket was {ticket.status} already", ticket.id,
                            ticket.number, already=ticket.status)
    return CloseRequest(word, True, proof, ticket.id, ticket.number)


def admitted(admission: Admission, request: CloseRequest | None, match: ThreadMatch, sender: Sender) -> Admission:
    """The requester's close stays on its ticket, also when a reply there would have opened a follow-up."""
    if request is None or not request.acts or admission.match.ticket_id is not None:
        return admission
    return Admission(match, sender)


def close(w: Writer, ticket: Ticket, parsed: ParsedMail, inbound_id: int, sender: Sender, request: CloseRequest,
          status: str) -> Change:
    """Record the reply and close the ticket (the SLA clock stops, as for any close)."""
    text = parsed.new_text or parsed.text
    store_message(w, ticket.id, parsed, inbound_id, MessageKind.CUSTOMER, text)
    ticket.updated_at = w.now
    if request.already is not None:
        detail = f"{request.word} from the requester: already {request.already}; the reply reopens nothing"
        w.store.add_rows(Event, [event_row(w, ticket.id, "close_ignored", detail, sender.address)])
        return Change(ticket.id, ticket.number, False, False, MessageKind.CUSTOMER, ("close_ignored",), text=text)
    before = ticket.status
    ticket.status = status
    ticket.resolved_at = ticket.resolved_at or w.now
    if status == Status.CLOSED.value:
        ticket.closed_at = w.now
    sla_timers.sync(w.store, w.sla, ticket, w.now)
    detail = f"{before} -> {status} by the requester's {request.word} by mail; {request.reason}"
    w.store.add_rows(Event, [event_row(w, ticket.id, "status", detail, sender.address)])
    return Change(ticket.id, ticket.number, False, False, MessageKind.CUSTOMER, ("status",), status_changed=status,
                  text=text)


def note_ignored(w: Writer, change: Change, request: CloseRequest | None, sender: Sender) -> Change:
    """An ignored close word, on the ticket it named when the mail joined that ticket: agents see why."""
    if request is None or request.acts or request.ticket_id is None or change.ticket_id != request.ticket_id:
        return change
    detail = f"{request.word} from {sender.address} ignored: {request.reason}"
    w.store.add_rows(Event, [event_row(w, change.ticket_id, "close_ignored", detail, sender.address)])
    return replace(change, events=(*change.events, "close_ignored"))
