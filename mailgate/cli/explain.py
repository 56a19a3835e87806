"""``mailgate explain``: what happened to a received mail, from the record stored when it arrived.

The record (``inbound.decision``, written by ``pipeline/trail.py`` in the mail's own savepoint) says
what was concluded at each stage; what became of the mails it queued is read now, from the outbox,
so "the ack is still pending, relay said 451" shows up days later too. Nothing is re-run here.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mailgate.storage.model import Event, Inbound, Outbox, Ticket

# "id:42", "ticket:123456", "#123456", "<abc@host>", "abc@host", or a bare number (a ticket number first)
_PREFIX = re.compile(r"^(id|ticket|message-id):(.+)$", re.IGNORECASE)


class NotFound(LookupError):
    pass


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def find(session: Session, key: str) -> tuple[str, list[Inbound]]:
    """The received mails ``key`` names, oldest first, and what it was taken for."""
    key = key.strip()
    kind, value = "", key
    if m := _PREFIX.match(key):
        kind, value = m.group(1).lower(), m.group(2).strip()
    if kind == "message-id" or (not kind and ("@" in value or value.startswith("<"))):
        bare = value.strip("<>")
        named = or_(Inbound.message_id == f"<{bare}>", Inbound.message_id == bare)
        rows = session.scalars(select(Inbound).where(named).order_by(Inbound.id)).all()
        if not rows:
            raise NotFound(f"no received mail has Message-ID <{bare}>")
        return "message-id", list(rows)
    value = value.lstrip("#")
    if kind in ("", "ticket"):
        ticket = session.scalars(select(Ticket).where(Ticket.number == value)).first()
        if ticket is None and kind == "":
            ticket = session.scalars(select(Ticket).where(Ticket.number == value.upper())).first()
        if ticket is not None:
            rows = session.scalars(select(Inbound).where(Inbound.ticket_id == ticket.id).order_by(Inbound.id)).all()
            return "ticket", list(rows)
        if kind == "ticket":
            raise NotFound(f"no ticket {value}")
    if value.isdigit():
        row = session.get(Inbound, int(value))
        if row is not None:
            return "id", [row]
    raise NotFound(f"no received mail or ticket matches {key!r} (try id:N, ticket:N or a Message-ID)")


def _deliveries(session: Session, decision: dict[str, Any]) -> list[dict[str, Any]]:
    keys = [n["key"] for n in decision.get("notifications", []) if n.get("key")]
    rows = {r.dedupe_key: r for r in session.scalars(select(Outbox).where(Outbox.dedupe_key.in_(keys)))} if keys else {}
    out = []
    for note in decision.get("notifications", []):
        row = rows.get(note.get("key", ""))
        entry: dict[str, Any] = {"kind": note["kind"], "to": note["to"]}
        if row is None:
            entry["status"] = "not in the outbox (removed, or never committed)"
        else:
            entry.update(
                outbox_id=row.id,
                status=row.status,
                attempts=row.attempts,
                sent_at=_iso(row.sent_at),
                next_attempt_at=_iso(row.next_attempt_at) if row.status == "pending" else None,
                last_error=row.last_error,
            )
        out.append(entry)
    return out


def _held(session: Session, row: Inbound) -> list[str]:
    """Notifications the guard held back for this mail (rate limits, suppressed or automatic senders)."""
    if row.ticket_id is None or row.processed_at is None:
        return []
    events = session.scalars(
        select(Event).where(
            Event.ticket_id == row.ticket_id, Event.kind == "notification_held", Event.at == row.processed_at
        )
    ).all()
    return [e.detail or "" for e in events]


def explain(session: Session, row: Inbound) -> dict[str, Any]:
    decision = dict(row.decision or {})
    ticket = session.get(Ticket, row.ticket_id) if row.ticket_id else None
    data: dict[str, Any] = {
        "id": row.id,
        "received_at": _iso(row.received_at),
        "processed_at": _iso(row.processed_at),
        "source": row.source,
        "peer": row.peer or None,
        "mailbox": row.mailbox,
        "mail_from": row.mail_from,
        "rcpt_tos": list(row.rcpt_tos or []),
        "message_id": row.message_id,
        "size": row.size,
        "status": row.status,
        "reason": row.reason,
        "ticket": ticket.number if ticket else None,
        "duplicate_of": row.duplicate_of,
        "recorded": bool(row.decision),
    }
    stages = ("unfetched", "dedupe", "classification", "thread", "sender", "admission", "rules", "route", "actions")
    for stage in stages:
        if stage in decision:
            data[stage] = decision[stage]
    for stage in ("customer_close", "status_request", "forwarded"):  # customer_close.py, status_request.py,
        # forward_intake.py
        if stage in decision:
            data[stage] = decision[stage]
    for stage in ("spam", "flood"):  # pipeline/holds.py: the relay's verdict, flood control's count
        if stage in decision:
            data[stage] = decision[stage]
    for stage in ("merge", "split"):  # pipeline/links.py: an agent's #merge or #split, done or refused
        if stage in decision:
            data[stage] = decision[stage]
    if "notifications" in decision:
        data["notifications"] = _deliveries(session, decision)
    if decision.get("history"):
        data["history"] = decision["history"]
    held = _held(session, row)
    if held:
        data["held"] = held
    return data


def retrace(session: Session, row: Inbound, config_path: str) -> list[dict[str, Any]] | None:
    """Every rule's verdict on the stored mail, by the rules as they are now (intake keeps only which
    matched: tracing each rule at intake would cost every mail what only a question needs).
    None when the bytes were not kept (a refused mail) or the configuration does not load."""
    from mailgate.domain import Envelope
    from mailgate.errors import MailgateError
    from mailgate.pipeline import submission
    from mailgate.pipeline.parse import parse
    from mailgate.pipeline.route import route
    from mailgate.storage.store import Store

    raw = Store(session).raw(row.id)
    rules = _rules_now(config_path)
    if raw is None or rules is None:
        return None
    config, compiled = rules
    try:
        parsed = parse(raw, config.main.intake.limits)
    except MailgateError:
        return None
    env = Envelope(row.mail_from, tuple(row.rcpt_tos or ()), "pipe", row.received_at, row.peer, row.mailbox)
    topic = next((m.help_topic for m in config.main.intake.imap if m.name == row.mailbox), None)
    channel = submission.read(raw, row.source)  # the API's, the form's, staff's: as the pipeline saw it
    decision = route(parsed, env, config.rules, topic, compiled, explain=True,
                     chosen_topic=submission.chosen_topic(channel), channel=submission.channel_name(channel))
    return [{"rule": t.name, "matched": t.matched, "reason": t.reason} for t in decision.trace]


@lru_cache(maxsize=1)
def _rules_now(config_path: str) -> tuple[Any, Any] | None:
    from mailgate.config import load_config
    from mailgate.errors import ConfigError
    from mailgate.rules.engine import CompiledRules

    try:
        config = load_config(config_path)
    except ConfigError:
        return None
    return config, CompiledRules(config.rules.rules)


def _line(label: str, text: object) -> str:
    return f"  {label + ':':<16}{text}"


def _done(yes: bool, what: str = "carried out") -> str:
    return what if yes else "ignored" if what == "carried out" else f"not {what}"


def _head(data: dict[str, Any]) -> list[str]:
    where = f"mailbox {data['mailbox']}" if data["mailbox"] else data["peer"] or "-"
    outcome = data["status"] + (f", ticket {data['ticket']}" if data["ticket"] else "")
    return [
        f"mail #{data['id']}  received {data['received_at']} by {data['source']} from {where}",
        _line("envelope", f"{data['mail_from'] or '<>'} -> {', '.join(data['rcpt_tos']) or '-'}"),
        _line("Message-ID", data["message_id"] or "-"),
        _line("outcome", outcome + (f" ({data['reason']})" if data["reason"] else "")),
    ]


def _thread(thread: dict[str, Any]) -> list[str]:
    if thread["ticket"]:
        signed = ", signed by us" if thread["signed"] else ""
        merged = f" (names {thread['named']}, merged into it)" if thread.get("merged_via") else ""
        return [_line("threaded", f"ticket {thread['ticket']} via {thread['via']}{signed}{merged}")]
    return [_line("threaded", f"no ticket: {thread.get('why_not', 'nothing matched')}")]


def _linked(command: str, v: dict[str, Any]) -> list[str]:
    """An agent's #merge or #split (pipeline/links.py): what moved, or why nothing did."""
    done = f"done, {v['ticket']} -> {v['other']}" if v["done"] else f"refused on {v['ticket']}"
    return [_line(command, f"{done}: {v['detail']}")]


def _sender(sender: dict[str, Any]) -> list[str]:
    how = " (authenticated)" if sender["authenticated"] else ""
    why = f": {sender['reason']}" if sender["reason"] else ""
    return [_line("sender", f"{sender['address']} as {sender['role']}{how}{why}")]


def _forwarded(fwd: dict[str, Any]) -> list[str]:
    """An agent's forward: who forwarded whose mail (pipeline/forward_intake.py)."""
    lines = [_line("forwarded", f"{fwd['summary']} ({fwd['how']}); authenticated by {fwd['authenticated']}")]
    if fwd.get("refused"):
        lines.append(f"{'':18}refused: {fwd['refused']}")
    if fwd.get("already_ticket"):
        lines.append(f"{'':18}already ticket {fwd['already_ticket']}")
    if fwd.get("date_not_understood"):
        lines.append(f"{'':18}date not understood: {fwd['date_not_understood']}")
    return lines


def _admission(adm: dict[str, Any]) -> list[str]:
    parts = ["joins the ticket" if adm["joins_ticket"] else "no existing ticket"]
    parts += [f"refused: {adm['refused']}"] if "refused" in adm else []
    parts += [f"follow-up of {adm['follow_up_of']}"] if "follow_up_of" in adm else []
    parts += [f"adds {adm['adds_collaborator']} as collaborator"] if "adds_collaborator" in adm else []
    return [_line("admission", "; ".join(parts))]


def _rules(rules: dict[str, Any]) -> list[str]:
    lines = [_line("rules matched", ", ".join(rules["matched"]) or "none")]
    lines += [f"{'':18}{change}" for change in rules.get("changes", [])]
    trace = rules.get("trace") or rules.get("trace_now") or []
    if trace and not rules.get("trace"):
        lines.append(f"{'':18}each rule, as the rules are now:")
    lines += [f"{'':18}{'+' if t['matched'] else '-'} {t['rule']}: {t['reason']}" for t in trace]
    return lines


def _route(route: dict[str, Any]) -> list[str]:
    text = (
        f"{route['action']}; help topic {route['help_topic'] or '-'} (via {route['help_topic_via']}), "
        f"department {route['department'] or '-'}, priority {route['priority']}, "
        f"SLA {route['sla_plan'] or '-'}, assignee {route['assignee'] or '-'}"
    )
    return [_line("route", text + ("; no acknowledgment" if route["no_autoreply"] else ""))]


def _actions(actions: dict[str, Any]) -> list[str]:
    what = "opened" if actions["created"] else "reopened" if actions["reopened"] else "updated"
    lines = [_line("actions", f"{what} ticket {actions['ticket']} with a {actions['message']} message")]
    lines += [f"{'':18}{event}" for event in actions["events"]]
    return lines + [f"{'':18}command refused: {error}" for error in actions["command_errors"]]


def _notifications(notes: list[dict[str, Any]]) -> list[str]:
    lines = [_line("notifications", f"{len(notes)} queued" if notes else "none queued")]
    for note in notes:
        state = note["status"]
        if note.get("sent_at"):
            state += f" {note['sent_at']}"
        if note.get("next_attempt_at"):
            state += f", next attempt {note['next_attempt_at']}"
        if note.get("last_error"):
            state += f" (last answer: {note['last_error']})"
        outbox = f"outbox #{note['outbox_id']}: " if "outbox_id" in note else ""
        lines.append(f"{'':18}{note['kind']} to {', '.join(note['to'])}: {outbox}{state}")
    return lines


def _unfetched(v: dict[str, Any]) -> list[str]:
    return [
        _line("not fetched", v["reason"]),
        _line("waits in", v["left_in"]),
        _line("header", f"From: {v['from']} | Subject: {v['subject']} | Date: {v['date']}"),
    ]


def _spam(v: dict[str, Any]) -> list[str]:
    """The relay's verdict as read at intake, believed or not and why (pipeline/mtaverdict.py)."""
    score = "-" if v["score"] is None else v["score"]
    said = f"spam={str(v['spam']).lower()} score={score} dmarc={v['dmarc']}"
    return [_line("spam verdict", f"{said} ({'trusted' if v['trusted'] else 'not trusted'}: {v['why']})")]


_STAGES = (
    ("unfetched", _unfetched),
    ("dedupe", lambda v: [_line("dedupe", v)]),
    ("classification", lambda v: [_line("classified", f"{v['kind']} ({v['reason']})")]),
    ("thread", _thread),
    ("forwarded", _forwarded),
    ("sender", _sender),
    ("admission", _admission),
    ("rules", _rules),
    ("route", _route),
    ("spam", _spam),
    ("flood", lambda v: [_line("flood control", v.get("rung") or v.get("why"))]),
    ("customer_close", lambda v: [_line("close command", f"{v['command']} {_done(v['acts'])}: {v['reason']}")]),
    ("status_request", lambda v: [_line("status request", f"{_done(v['answered'], 'answered')}: {v['reason']}")]),
    ("merge", lambda v: _linked("#merge", v)),
    ("split", lambda v: _linked("#split", v)),
    ("actions", _actions),
    ("notifications", _notifications),
    ("held", lambda v: [f"{'':18}held: {h}" for h in v]),
    ("history", lambda v: [_line("before", f"{h['status']} at {h['at']} ({h['reason']})") for h in v]),
)


def render(data: dict[str, Any]) -> str:
    lines = _head(data)
    if not data["recorded"]:
        lines.append("  (no decision record: received before records were kept, or its processing failed)")
    for stage, show in _STAGES:
        if stage in data:
            lines += show(data[stage])
    return "\n".join(lines)
