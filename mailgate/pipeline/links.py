"""Stage 9, agents' side: ``#merge NUMBER`` and ``#split`` from an authenticated agent's mail.

Two requests of one customer about one thing are one ticket: ``#merge 123456`` on ticket A moves
A's thread (messages, events, Message-IDs) and people into the survivor B and closes A with a
``merged_into`` link that threading follows, so mail to either number, or answering either thread,
lands in B. One request that turned into two is split: the agent answers the alert of the message
where the second one starts, and that message and the same sender's later ones become ticket C,
linked both ways with A.

Everything happens in the agent's mail's transaction, and each refusal is the ordinary refused-command
answer (apply_agent.py): nothing changed, the mail kept as a note on the ticket, the agent told why.
Agents are the only ones who get here (authorize.py); a customer's "#merge" is just words.

SLA: the survivor keeps its own plan, clock and due times (it is the request being worked on); the
merged ticket's clock stops, its rungs not yet fired are deleted (a merged ticket never escalates or
reminds again), the rungs it fired stay on it and their events move with its thread, so B's history
shows them. A split-off ticket starts its own clock under A's plan when it is created.
"""

from __future__ import annotations

import re
from dataclasses import replace

from mailgate.domain import Change, Command, MessageKind, ParsedMail, Role, Sender, Status, ThreadMatch, TicketLink
from mailgate.pipeline.apply import Writer, event_row, insert_numbered, store_message
from mailgate.pipeline.apply_agent import apply_agent
from mailgate.pipeline.commands import ALONE, AgentMail
from mailgate.sla import timers as sla_timers
from mailgate.storage import links
from mailgate.storage.model import Event, Ticket

_DONE = (Status.RESOLVED.value, Status.CLOSED.value)
_PREFIX = re.compile(r"^\s*((re|aw|sv|fwd?|wg)\s*:\s*)+", re.I)


def wanted(mail: AgentMail) -> Command | None:
    """The mail's #merge or #split, when its commands are otherwise valid (else apply_agent refuses them)."""
    if mail.errors:
        return None
    return next((c for c in mail.commands if c.name in ALONE), None)


def carry_out(
    w: Writer,
    ticket: Ticket,
    parsed: ParsedMail,
    inbound_id: int,
    sender: Sender,
    mail: AgentMail,
    command: Command,
    match: ThreadMatch,
    to_notes: bool,
) -> tuple[Change, Ticket]:
    """The change and the ticket it leaves the mail on: the survivor, the split-off ticket, or (refused) this one."""
    if command.name == "merge":
        target, why = _merge_target(w, ticket, command.arg, match)
        if target is None:
            return _refused(w, ticket, parsed, inbound_id, sender, mail, to_notes, TicketLink("merge", ticket.number,
                                                                                              refused=why))
        return _merge(w, ticket, target, parsed, inbound_id, sender, mail)
    answered, why = _answered(w, ticket, parsed)
    if answered is None:
        return _refused(w, ticket, parsed, inbound_id, sender, mail, to_notes, TicketLink("split", ticket.number,
                                                                                          refused=why))
    return _split(w, ticket, answered, parsed, inbound_id, sender, mail)


def _refused(w: Writer, ticket: Ticket, parsed: ParsedMail, inbound_id: int, sender: Sender, mail: AgentMail,
             to_notes: bool, link: TicketLink) -> tuple[Change, Ticket]:
    change = apply_agent(w, ticket, parsed, inbound_id, sender, replace(mail, errors=(link.refused or "",)), to_notes)
    return replace(change, link=link), ticket


# --- merge ---------------------------------------------------------------------------------------
def _merge_target(w: Writer, ticket: Ticket, number: str, match: ThreadMatch) -> tuple[Ticket | None, str]:
    """The survivor, or why there is none. A ticket already merged is refused rather than followed: the
    agent named it, and merging into where its chain ends might not be what they meant."""
    target = w.store.ticket_by_number(number)
    if target is None:
        return None, f"#merge {number}: there is no ticket {number}"
    if target.id == ticket.id:
        if match.merged:  # an answer to a mail of the merged ticket: it lands here, in the survivor
            return None, f"ticket {match.merged[0][1]} is already merged into {ticket.number}: nothing was done"
        return None, f"#merge {number}: a ticket cannot be merged into itself"
    final, passed = links.survivor(w.store.session, target)
    if final.id == ticket.id:
        return None, (f"#merge {number}: {number} is already merged into {ticket.number}; merging {ticket.number} "
                      f"into it would make a circle")
    if passed:
        return None, (f"#merge {number}: ticket {number} is merged into {final.number} already; "
                      f"send #merge {final.number} to merge into the ticket that took it over")
    return target, ""


def _merge(w: Writer, merged: Ticket, survivor: Ticket, parsed: ParsedMail, inbound_id: int, sender: Sender,
           mail: AgentMail) -> tuple[Change, Ticket]:
    session = w.store.session
    moved = links.move_thread(session, merged.id, survivor.id)
    present = {email for email, _name, _role in w.store.participants(survivor.id)}
    joining = [
        (email, name, Role.COLLABORATOR.value)  # A's requester too: B has one requester
        for email, name, _role in w.store.participants(merged.id)
        if email not in present and email != survivor.requester_email
    ]
    w.store.add_participants(survivor.id, joining)
    links.drop_participants(session, merged.id)
    before = merged.status
    merged.status, merged.closed_at, merged.updated_at = Status.CLOSED.value, w.now, w.now
    merged.merged_into = survivor.id
    merged.sla_running_since = None  # its clock stops where it is: nothing of it runs on
    links.drop_pending_timers(session, merged.id)
    people = ", ".join(email for email, _name, _role in joining) or "nobody new"
    detail = (f"{moved['messages']} message(s), {moved['events']} event(s) and {moved['thread ids']} Message-ID(s) "
              f"from {merged.number}; joined as collaborators: {people}")
    events = [
        event_row(w, merged.id, "merged", f"{before} -> closed: merged into {survivor.number}", sender.address),
        event_row(w, survivor.id, "merged_from", f"ticket {merged.number} merged in: {detail}", sender.address),
    ]
    reopened = survivor.status in _DONE and before not in _DONE
    if reopened:  # A's open question now waits in B
        events.append(event_row(w, survivor.id, "reopened",
                                f"{survivor.status} -> open: open ticket {merged.number} merged in", sender.address))
        survivor.status, survivor.closed_at = Status.OPEN.value, None
        sla_timers.sync(w.store, w.sla, survivor, w.now)
    survivor.updated_at = w.now
    if mail.text:  # the agent's words are for the agents: kept as a note, never sent
        store_message(w, survivor.id, parsed, inbound_id, MessageKind.NOTE, mail.text)
        events.append(event_row(w, survivor.id, "note", "internal note", sender.address))
    w.store.add_rows(Event, events)
    link = TicketLink("merge", merged.number, survivor.number, detail)
    names = tuple(str(e["kind"]) for e in events)
    change = Change(survivor.id, survivor.number, False, reopened, MessageKind.NOTE, names,
                    status_changed=Status.OPEN.value if reopened else None, link=link)
    return change, survivor


# --- split ---------------------------------------------------------------------------------------
def _answered(w: Writer, ticket: Ticket, parsed: ParsedMail) -> tuple[links.Entry | None, str]:
    """The customer message the agent's mail answers (In-Reply-To): our alert about it, or the message itself."""
    session = w.store.session
    thread = links.entries(session, ticket.id)
    for mid in parsed.in_reply_to:
        ours = links.our_mail(session, ticket.id, mid)
        wanted_mid, sha = (mid, None) if ours is None else (ours.in_reply_to, ours.inbound_sha)
        found = next((e for e in thread if (wanted_mid and e.message_id == wanted_mid)
                      or (sha and e.inbound_sha and e.inbound_sha.startswith(sha))), None)
        if found is not None:
            return _splittable(ticket, found, thread)
        elsewhere = links.ticket_holding(session, wanted_mid) if wanted_mid else None
        if elsewhere is not None and elsewhere.id != ticket.id:
            return None, f"#split: that message is in ticket {elsewhere.number} now, not in {ticket.number}"
    return None, (f"#split: this mail answers no message of ticket {ticket.number}; reply with #split to the alert "
                  f"of the customer's message that starts the new request")


def _splittable(ticket: Ticket, entry: links.Entry, thread: list[links.Entry]) -> tuple[links.Entry | None, str]:
    if entry.kind != MessageKind.CUSTOMER.value:
        what = "an internal note" if entry.kind == MessageKind.NOTE.value else f"a message of kind {entry.kind}"
        return None, f"#split: that message is {what}; only a customer's message can start a ticket of its own"
    if thread and thread[0].id == entry.id:
        return None, f"#split: that message opened ticket {ticket.number}; there is nothing to split it from"
    return entry, ""


def _subject(entry: links.Entry, ticket: Ticket, w: Writer) -> str:
    """The message's own subject without our tag and reply prefixes (else the old ticket's)."""
    subject = entry.subject.replace(w.tag.tag(ticket.number), " ")
    subject = " ".join(_PREFIX.sub("", subject).split())
    return subject or ticket.subject


def _split(w: Writer, ticket: Ticket, first: links.Entry, parsed: ParsedMail, inbound_id: int, sender: Sender,
           mail: AgentMail) -> tuple[Change, Ticket]:
    session = w.store.session
    moving = [e for e in links.entries(session, ticket.id)
              if e.id >= first.id and e.from_email == first.from_email and e.kind == MessageKind.CUSTOMER.value]
    new = insert_numbered(w, {
        "subject": _subject(first, ticket, w), "status": Status.OPEN.value, "priority": ticket.priority,
        "help_topic": ticket.help_topic, "department": ticket.department, "assignee": None,
        "sla_plan": ticket.sla_plan, "requester_email": first.from_email, "requester_name": first.from_name,
        "created_at": w.now, "updated_at": w.now, "first_response_due": None, "resolution_due": None,
        "first_response_at": None, "resolved_at": None, "closed_at": None, "overdue": False,
        "conversation_index": None, "reply_address": ticket.reply_address, "split_from": ticket.id,
    })
    sla_timers.sync(w.store, w.sla, new, w.now, created=True)
    w.store.add_participants(new.id, [(first.from_email, first.from_name, Role.REQUESTER.value)])
    links.move_messages(session, ticket.id, new.id, moving)
    detail = f"{len(moving)} message(s) of {first.from_email}, the first of them message #{first.id}"
    events = [
        event_row(w, ticket.id, "split", f"split into {new.number}: {detail}", sender.address),
        event_row(w, new.id, "created", f"split from {ticket.number} by {sender.address}"),
        event_row(w, new.id, "split_from", f"from {ticket.number}: {detail}", sender.address),
    ]
    w.store.touch(ticket, w.now)
    if mail.text:
        store_message(w, new.id, parsed, inbound_id, MessageKind.NOTE, mail.text)
        events.append(event_row(w, new.id, "note", "internal note", sender.address))
    w.store.add_rows(Event, events)
    link = TicketLink("split", ticket.number, new.number, detail)
    names = tuple(str(e["kind"]) for e in events)
    return Change(new.id, new.number, False, False, MessageKind.NOTE, names, text=first.body, link=link), new
