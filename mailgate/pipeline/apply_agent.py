"""Stage 9, agents' side: an authenticated agent's reply, note or commands applied to a ticket.

All of a mail's commands are checked before any is applied: one bad command
means none is, the mail is kept as an internal note and the agent is told
why. Otherwise each command is one event, an agent reply moves the ticket to
``awaiting_reply`` (unless a ``#status`` says otherwise) and the first one
records the first-response time.
"""

from __future__ import annotations

from mailgate.domain import Change, Command, MessageKind, ParsedMail, Sender, Status, shown
from mailgate.pipeline.apply import Writer, event_row, store_message
from mailgate.pipeline.commands import AgentMail
from mailgate.sla import timers as sla_timers
from mailgate.storage.model import Event, Ticket

_TICKET_FIELDS = {"priority": "priority", "dept": "department", "topic": "help_topic", "sla": "sla_plan"}


def _set_status(w: Writer, ticket: Ticket, status: str) -> None:
    ticket.status = status
    if status == Status.RESOLVED.value:
        ticket.resolved_at = w.now
    elif status == Status.CLOSED.value:
        ticket.closed_at = w.now
        ticket.resolved_at = ticket.resolved_at or w.now
    else:
        ticket.closed_at = None


def _command(w: Writer, ticket: Ticket, cmd: Command, agent: str, effects: dict[str, str]) -> dict[str, object]:
    if cmd.name == "status":
        before = ticket.status
        _set_status(w, ticket, cmd.arg)
        effects["status"] = cmd.arg
        return event_row(w, ticket.id, "status", f"{before} -> {cmd.arg}", agent)
    if cmd.name == "assign":
        ticket.assignee = None if cmd.arg == "none" else cmd.arg
        effects["assigned"] = ticket.assignee or ""
        return event_row(w, ticket.id, "assigned", f"assignee {ticket.assignee or 'none'}", agent)
    if cmd.name in ("cc", "uncc"):
        _collaborator(w, ticket, cmd.arg, add=cmd.name == "cc")
        return event_row(w, ticket.id, "collaborator", f"{'added' if cmd.name == 'cc' else 'removed'} {cmd.arg}", agent)
    field = _TICKET_FIELDS[cmd.name]
    before = getattr(ticket, field)
    setattr(ticket, field, cmd.arg)
    if cmd.name == "dept":
        effects["transferred"] = cmd.arg
    kind = {"dept": "transferred"}.get(cmd.name, cmd.name)
    return event_row(w, ticket.id, kind, f"{field} {shown(before)} -> {shown(cmd.arg)}", agent)


def _collaborator(w: Writer, ticket: Ticket, address: str, *, add: bool) -> None:
    present = {email for email, _name, _role in w.store.participants(ticket.id)}
    if add and address not in present:
        w.store.add_participants(ticket.id, [(address, "", "collaborator")])
    elif not add and address in present:
        w.store.remove_collaborator(ticket.id, address)


def apply_agent(
    w: Writer, ticket: Ticket, parsed: ParsedMail, inbound_id: int, sender: Sender, mail: AgentMail, to_notes: bool
) -> Change:
    if mail.errors:  # nothing applied; the words are kept where only agents see them
        store_message(w, ticket.id, parsed, inbound_id, MessageKind.NOTE, parsed.new_text or parsed.text)
        w.store.add_rows(Event, [event_row(w, ticket.id, "commands_refused", "; ".join(mail.errors), sender.address)])
        return Change(
            ticket.id,
            ticket.number,
            False,
            False,
            MessageKind.NOTE,
            ("commands_refused",),
            command_errors=mail.errors,
            text=mail.text,
        )
    # A mail of commands alone ("#assign me") says nothing to the customer: no reply is relayed, and the
    # ticket does not wait for the customer because of it.
    commands_only = bool(mail.commands) and not mail.text.strip()
    kind = MessageKind.NOTE if (mail.note or to_notes or commands_only) else MessageKind.AGENT
    effects: dict[str, str] = {}
    before = (ticket.status, ticket.first_response_at, ticket.sla_plan, ticket.priority)
    events = [_command(w, ticket, cmd, sender.address, effects) for cmd in mail.commands]
    if mail.text or kind is MessageKind.AGENT:
        store_message(w, ticket.id, parsed, inbound_id, kind, mail.text)
    if kind is MessageKind.AGENT:
        ticket.first_response_at = ticket.first_response_at or w.now
        if "status" not in effects and ticket.status != Status.AWAITING_REPLY.value:
            _set_status(w, ticket, Status.AWAITING_REPLY.value)
        events.append(event_row(w, ticket.id, "replied", "agent reply sent to the requester", sender.address))
    elif mail.text:
        events.append(event_row(w, ticket.id, "note", "internal note", sender.address))
    ticket.updated_at = w.now
    w.store.add_rows(Event, events)
    if before != (ticket.status, ticket.first_response_at, ticket.sla_plan, ticket.priority):
        sla_timers.sync(w.store, w.sla, ticket, w.now, before=before[2])
    return Change(
        ticket.id,
        ticket.number,
        False,
        False,
        kind,
        tuple(str(e["kind"]) for e in events),
        status_changed=effects.get("status"),
        assigned_to=effects.get("assigned") or None,
        transferred_to=effects.get("transferred"),
        text=mail.text,
    )
