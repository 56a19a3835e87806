"""The orchestrator: one mail's way through the stages, in one transaction. Read this first.

    spool -> parse -> dedupe -> classify -> thread -> authorize -> route -> apply -> notify

Each mail runs inside a savepoint, so a batch of mails can share one commit
(group commit) while a failure of one mail rolls back only that mail, which
is then kept in quarantine with the reason. The caller acknowledges the
source only after ``ingest``/``ingest_batch`` has returned, i.e. committed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction

from mailgate.clock import Clock
from mailgate.config import Config
from mailgate.domain import (
    Change,
    Classification,
    Envelope,
    InboundStatus,
    Kind,
    MessageKind,
    Outcome,
    ParsedMail,
    Priority,
    RawMail,
    Role,
    RouteDecision,
    Sender,
    ThreadMatch,
)
from mailgate.errors import LeaseLost, OverLimit, ParseError, Rejected, TempFail
from mailgate.identity import Identity
from mailgate.outbound.templates import Templates
from mailgate.pipeline import bounce, customer_close, forward_intake, holds, links, spam, status_request, submission
from mailgate.pipeline import spool as spooling
from mailgate.pipeline.apply import Intent, Writer, apply, choose_assignee
from mailgate.pipeline.apply_agent import apply_agent
from mailgate.pipeline.audience import Directory
from mailgate.pipeline.author import Author, author
from mailgate.pipeline.authorize import Admission, admit, authorize
from mailgate.pipeline.classify import classify
from mailgate.pipeline.commands import Vocabulary, parse_agent_mail
from mailgate.pipeline.dedupe import find_duplicate
from mailgate.pipeline.mtaverdict import Verdict
from mailgate.pipeline.notice import NotifyContext, ticket_sender
from mailgate.pipeline.notify import notify_mail, own_address, recipients, send_rejection, support_address
from mailgate.pipeline.parse import parse
from mailgate.pipeline.route import route
from mailgate.pipeline.spool import Spooled
from mailgate.pipeline.thread import TicketTag, landed, match_thread
from mailgate.pipeline.trail import Trail, why_unthreaded
from mailgate.rules.engine import CompiledRules
from mailgate.storage import leases
from mailgate.storage.blobs import BlobStore
from mailgate.storage.db import Database, is_transient
from mailgate.storage.model import Ticket
from mailgate.storage.store import Store

log = logging.getLogger(__name__)
_NO_ROUTE = RouteDecision(None, None, Priority.NORMAL, None, None)  # for notices about mail that is not routed
# A mail parsed beforehand, elsewhere (parsing is pure): the result, the ParseError it raised, or None (not yet).
Parsed = ParsedMail | ParseError | None


@dataclass(frozen=True)
class Context:
    """One consistent snapshot of everything ingest needs; swapped whole on reload."""

    config: Config
    db: Database
    clock: Clock
    templates: Templates
    identity: Identity
    tag: TicketTag
    blobs: BlobStore
    rules: CompiledRules
    own_addresses: frozenset[str]
    directory: Directory
    vocabulary: Vocabulary
    notifier: NotifyContext
    # Importing an archive (``ingest --history``): each mail at its own date, no SLA clock, and no
    # automatic mail at all (acks, alerts, rejections): its people were answered long ago.
    history: bool = False
    # ``ingest --history --number-from NAME``: a new ticket keeps the number of that foreign tag in its subject
    number_from: str | None = None

    def mailbox_topic(self, mailbox: str | None) -> str | None:
        return next((m.help_topic for m in self.config.main.intake.imap if m.name == mailbox), None)


def _act(
    w: Writer,
    ctx: Context,
    parsed: ParsedMail,
    inbound_id: int,
    cls: Classification,
    decision: RouteDecision,
    env: Envelope,
    admission: Admission,
    who: Author,
    closing: customer_close.CloseRequest | None = None,
    note: bool = False,
) -> tuple[Change, Ticket]:
    """apply, or apply_agent for an authenticated agent's mail to a ticket (commands parsed first),
    or the requester's own close (customer_close.py)."""
    notes_address = ctx.config.main.intake.notes_address
    intent = Intent(
        admission.follow_up_of,
        admission.add_collaborator,
        to_notes=note or (bool(notes_address) and notes_address in recipients(parsed, env)),
        requester=who.requester,
        also_cc=who.also_cc,
        # only a support address: notes@, status@ or outbound.from are ours too, but not to speak from
        reply_address=own_address(parsed, env, frozenset(a.lower() for a in ctx.config.main.intake.addresses)),
    )
    match, sender = admission.match, admission.sender
    if sender.role is Role.AGENT and match.ticket_id is not None:
        ticket = w.store.ticket(match.ticket_id)
        assert ticket is not None
        mail = parse_agent_mail(parsed.new_text, ctx.vocabulary, sender.address)
        command = links.wanted(mail)
        if command is not None:  # #merge, #split: the mail ends on the survivor or the new ticket
            return links.carry_out(w, ticket, parsed, inbound_id, sender, mail, command, match, intent.to_notes)
        return apply_agent(w, ticket, parsed, inbound_id, sender, mail, intent.to_notes), ticket
    if closing is not None and closing.acts and match.ticket_id is not None:
        ticket = w.store.ticket(match.ticket_id)
        assert ticket is not None
        target = ctx.config.main.tickets.customer_close.status
        return customer_close.close(w, ticket, parsed, inbound_id, sender, closing, target), ticket
    change, ticket = apply(w, parsed, inbound_id, cls, match, sender, decision, env.source, intent)
    if change.created and ctx.number_from:  # importing another desk's tickets: its tag keeps threading
        for system, number in w.tag.foreign_numbers(parsed.subject, ctx.number_from)[:1]:
            if w.store.ticket_by_alias(system, number) is None:  # a follow-up keeps the first ticket's number
                w.store.add_alias(system, number, ticket.id)
    return customer_close.note_ignored(w, change, closing, sender), ticket


def _kept(store: Store, spooled: Spooled, now: datetime, reason: str, mid: str | None, trail: Trail) -> Outcome:
    """Stored, answered 250, and kept aside with the reason: nothing more happens to it."""
    record = trail.outcome("quarantined", reason)
    spooling.finish(store, spooled, InboundStatus.QUARANTINED, now, reason=reason, message_id=mid, decision=record)
    return Outcome("quarantined", None, reason, spooled.id, message_id=mid)


def _set_aside(
    store: Store,
    ctx: Context,
    spooled: Spooled,
    now: datetime,
    admission: Admission,
    sender: Sender,
    decision: RouteDecision,
    verdict: Verdict,
    released: bool,
    mid: str | None,
    trail: Trail,
    by_agent: bool = False,
) -> Outcome | RouteDecision:
    """A new mail a rule discards or quarantines, then mail held (spam, flood: ``holds.py``) until the
    admin releases it: stored, answered 250, no ticket and no mail. Else the decision to go on with."""
    inbound_id = spooled.id
    if admission.match.ticket_id is None and decision.action in ("discard", "quarantine"):  # rules act on new mail
        status = InboundStatus.DISCARDED if decision.action == "discard" else InboundStatus.QUARANTINED
        why = f"{decision.action} by rule: {decision.quarantine or '; '.join(decision.changes)}"
        spooling.finish(store, spooled, status, now, reason=why, message_id=mid, decision=trail.outcome(status, why))
        return Outcome(
            "quarantined" if status is InboundStatus.QUARANTINED else "accepted",
            None,
            why,
            inbound_id,
            decision.trace,
            route=decision,
            message_id=mid,
        )
    judged = holds.judge(store, ctx.config, ctx.templates, ctx.identity.domain, verdict, admission, sender, decision,
                         now, inbound_id, released=released, history=ctx.history, by_agent=by_agent)
    trail.flood(judged.record)
    if judged.held is None:
        return judged.decision
    store.update_inbound(inbound_id, {"hold": judged.hold})
    record = trail.outcome("quarantined", judged.held)
    spooling.finish(store, spooled, InboundStatus.QUARANTINED, now, reason=judged.held, message_id=mid, decision=record)
    return Outcome("quarantined", None, judged.held, inbound_id, decision.trace, route=judged.decision, message_id=mid,
                   decision=record)


def _bounce(store: Store, ctx: Context, raw: RawMail, parsed: ParsedMail, cls: Classification, env: Envelope,
            spooled: Spooled, now: datetime, trail: Trail) -> ThreadMatch | Outcome:
    """A bounce joins the ticket of the mail it proves to answer, and suppresses only what it proves."""
    proof = bounce.prove(raw, parsed, cls, store, ctx.identity, env.rcpt_tos)
    if proof is None:
        why = f"bounce: {cls.reason}; it does not prove it answers our mail, so nothing was suppressed"
        return _kept(store, spooled, now, why, parsed.message_id, trail)
    until = now + ctx.config.main.notifications.bounce_suppression
    suppressed = bounce.suppress_failed(store, proof, ctx.directory.names, cls, until, now)
    if proof.ticket_id is None:
        why = f"bounce of our mail without a ticket ({proof.via}); suppressed: {', '.join(suppressed) or 'nobody'}"
        return _kept(store, spooled, now, why, parsed.message_id, trail)
    ticket = store.ticket(proof.ticket_id)
    return landed(store, ThreadMatch(proof.ticket_id, "token", ticket.number if ticket else None, signed=True))


def _threaded(store: Store, ctx: Context, raw: RawMail, parsed: ParsedMail, cls: Classification, env: Envelope,
              spooled: Spooled, now: datetime, trail: Trail,
              channel: submission.Submission | None = None) -> ThreadMatch | Outcome:
    """The ticket the mail belongs to (a bounce: only the one it proves to answer; another channel's
    message: the ticket it names), recorded in the trail."""
    named = submission.thread(store, channel) if channel is not None else None
    if named is not None:
        match = landed(store, named) if named.ticket_id is not None else named
    elif cls.kind is Kind.BOUNCE:
        found = _bounce(store, ctx, raw, parsed, cls, env, spooled, now, trail)
        if isinstance(found, Outcome):
            return found
        match = found
    else:
        match = match_thread(parsed, store, ctx.tag, ctx.identity, env.rcpt_tos)
    trail.threaded(match, why_unthreaded(parsed, ctx.tag) if match.ticket_id is None else None)
    return match


def _forwarded(store: Store, ctx: Context, parsed: ParsedMail, env: Envelope, spooled: Spooled, now: datetime,
               forward: forward_intake.Forwarding | None, trail: Trail) -> Outcome | None:
    """An agent's forward that opens no ticket: refused (kept aside, the agent told why), or a customer
    mail the desk has already (a duplicate: the agent told its ticket). None: the mail goes on."""
    if forward is None or (forward.refused is None and forward.existing is None):
        return None
    trail.forwarded(forward_intake.record(forward))
    support = support_address(parsed, env, ctx.own_addresses, ctx.config.main.intake.addresses[0])
    mid = parsed.message_id
    if forward.existing is None:
        note = forward_intake.tell_refused(store, ctx.notifier, forward, parsed, support, now)
        trail.notified([note] if note else [])
        return _kept(store, spooled, now, f"forward refused: {forward.refused}", mid, trail)
    ticket = forward.existing
    forward_intake.again(store, ticket, forward, now)
    notes = forward_intake.receipt(store, ctx.notifier, forward, ticket, None, None, support, parsed.sha256, now)
    trail.notified(notes)
    why = f"the forwarded mail is already ticket {ticket.number}"
    record = trail.outcome("duplicate", why)
    spooling.finish(store, spooled, InboundStatus.DUPLICATE, now, reason=why, ticket_id=ticket.id, message_id=mid,
                    decision=record)
    sent = tuple((n.kind, n.to) for n in notes)
    return Outcome("duplicate", ticket.number, why, spooled.id, (), sent, None, mid, "duplicate", record)


def _unproven_commands(
    store: Store,
    ctx: Context,
    parsed: ParsedMail,
    cls: Classification,
    sender: Sender,
    ticket: Ticket | None,
    env: Envelope,
    now: datetime,
    trail: Trail,
) -> str | None:
    """An agent's commands that arrived without proof it is them: kept aside, never a customer ticket.

    Opening a ticket with the agent as requester would acknowledge them as a customer and leave the
    commands silently undone; applying them would let anyone who writes an agent's name in From work
    tickets. So the mail is kept with the reason, and the agent, at the address agents.yaml gives,
    is told how to send commands (when the mail names a ticket to tell them about).
    """
    if sender.role is Role.AGENT or not ctx.directory.is_agent(sender.address):
        return None
    commands = parse_agent_mail(parsed.new_text, ctx.vocabulary, sender.address).commands
    if not commands:
        return None
    named = " ".join(f"#{c.name} {c.arg}".strip() for c in commands)
    why = f"commands ({named}) from agent {sender.address} without authentication: not applied"
    if ticket is not None and not ctx.history:
        change = Change(ticket.id, ticket.number, False, False, MessageKind.NOTE, command_errors=(why,))
        notes = notify_mail(store, ctx.notifier, change, ticket, parsed, cls, sender, _NO_ROUTE, env, now)
        trail.notified(notes)
    return why


def _refused(
    store: Store,
    ctx: Context,
    parsed: ParsedMail,
    cls: Classification,
    env: Envelope,
    spooled: Spooled,
    now: datetime,
    refusal: str,
    decision: RouteDecision,
    trail: Trail,
) -> Outcome:
    sent: tuple[tuple[str, tuple[str, ...]], ...] = ()
    if env.source == "imap" and not ctx.history:  # an SMTP client hears the 550, a pipe's MTA bounces
        support = support_address(parsed, env, ctx.own_addresses, ctx.config.main.intake.addresses[0])
        note = send_rejection(store, ctx.notifier, parsed, cls, support, refusal, now)
        sent = ((note.kind, note.to),) if note else ()
        trail.notified([note] if note else [])
    mid = parsed.message_id
    record = trail.outcome("rejected", refusal)
    spooling.finish(
        store, spooled, InboundStatus.REJECTED, now, reason=refusal, message_id=mid, drop_raw=True, decision=record
    )
    return Outcome("rejected", None, refusal, spooled.id, decision.trace, sent, route=decision, message_id=mid)


def _not_for_a_ticket(store: Store, ctx: Context, parsed: ParsedMail, cls: Classification, env: Envelope,
                      who: Author, spooled: Spooled, now: datetime, trail: Trail) -> Outcome | None:
    """A mail that names nobody (kept), or one to the status address (answered, never a ticket)."""
    if who.address is None:
        why = "no sender: neither From, Sender, Reply-To nor an envelope sender"
        return _kept(store, spooled, now, why, parsed.message_id, trail)
    intake = ctx.config.main.intake
    support = [*intake.addresses, *([intake.notes_address] if intake.notes_address else [])]
    if intake.status_address and status_request.addressed(env.rcpt_tos or recipients(parsed, env),
                                                          intake.status_address, support):
        verdict = spam.verdict(parsed, env, env.source, intake.spam)  # spam gets no automatic answer either
        held = spam.hold_reason(verdict, intake.spam, agent=False)
        if held is not None:
            trail.spam(verdict)
            store.update_inbound(spooled.id, {"hold": "spam"})  # listed by --spam; a release answers it
            return _kept(store, spooled, now, held, parsed.message_id, trail)
        return _status_request(store, ctx, parsed, cls, who, spooled, now, trail)
    return None


def _status_request(store: Store, ctx: Context, parsed: ParsedMail, cls: Classification, who: Author,
                    spooled: Spooled, now: datetime, trail: Trail) -> Outcome:
    """Mail to the status address: answered with the sender's open tickets, or not and why; never a ticket."""
    intake = ctx.config.main.intake
    answer = status_request.answer(
        store, ctx.notifier, parsed, cls, who, intake.status_answers, intake.addresses[0], now, quiet=ctx.history
    )
    trail.status_request(answer)
    trail.notified([answer.note] if answer.note else [])
    reason = f"status request: {answer.reason}"
    record = trail.outcome("accepted", reason)
    mid = parsed.message_id
    spooling.finish(store, spooled, InboundStatus.ACCEPTED, now, reason=reason, message_id=mid, decision=record)
    sent = ((answer.note.kind, answer.note.to),) if answer.note else ()
    return Outcome("accepted", None, reason, spooled.id, (), sent, message_id=mid, decision=record)


def _archived_agent(ctx: Context, sender: Sender) -> Sender:
    """An archive the admin imports is theirs: its agents' answers are agents' answers, not strangers'."""
    if ctx.history and sender.role is not Role.AGENT and ctx.directory.is_agent(sender.address):
        return replace(sender, role=Role.AGENT, authenticated=True, reason="an agent's mail in an imported archive")
    return sender


def _placed(store: Store, ctx: Context, raw: RawMail, parsed: ParsedMail, cls: Classification, env: Envelope,
            spooled: Spooled, now: datetime, channel: submission.Submission | None,
            trail: Trail) -> tuple[ThreadMatch, Sender] | Outcome:
    """The ticket the mail belongs to and who wrote it (``authorize.py``; another channel may vouch for an
    agent), or the refusal of a channel's mail that names a ticket its author is no participant of."""
    match = _threaded(store, ctx, raw, parsed, cls, env, spooled, now, trail, channel)
    if isinstance(match, Outcome):
        return match
    sender = authorize(parsed, match, store, ctx.directory.names, ctx.identity,
                       ctx.config.main.security.agent_authentication, recipients(parsed, env))
    sender = submission.sender(channel, _archived_agent(ctx, sender), ctx.directory.names)
    refused = submission.refusal(channel, match, sender, store, ctx.own_addresses, ctx.directory.names,
                                 parsed.message_id, spooled.id)
    if refused is None:
        return match, sender
    trail.sender(sender)
    return _refused(store, ctx, parsed, cls, env, spooled, now, refused, _NO_ROUTE, trail)


def _spool(store: Store, raw: RawMail, env: Envelope, pre: ParsedMail | None, replayed: int | None) -> Spooled:
    if replayed is not None:  # a kept mail replayed in place: its row and bytes are there already
        return Spooled(replayed, raw, stored=True)
    return spooling.spool(store, raw, env, pre.sha256 if pre is not None else None)


def _process(
    session: Session,
    raw: RawMail,
    env: Envelope,
    ctx: Context,
    now: datetime,
    blobs: BlobStore,
    pre: Parsed = None,
    explain: bool = False,
    replayed: int | None = None,
) -> Outcome:
    store = Store(session)
    if isinstance(pre, ParseError):
        raise pre
    spooled = _spool(store, raw, env, pre, replayed)
    inbound_id = spooled.id
    parsed = pre if pre is not None else parse(raw, ctx.config.main.intake.limits)
    mid = parsed.message_id
    trail = Trail()
    duplicate = find_duplicate(store, parsed)
    trail.dedupe(duplicate.inbound_id if duplicate is not None else None)
    # a dry run (``rules test``) of a mail already stored goes on as if it were new: the admin asked for
    # the whole trace, and the duplicate is said in the outcome's reason instead
    seen = f"already stored as inbound #{duplicate.inbound_id}; a delivery would stop there" if duplicate else None
    if duplicate is not None and not explain:
        first = store.ticket(duplicate.ticket_id) if duplicate.ticket_id else None
        spooling.finish(
            store,
            spooled,
            InboundStatus.DUPLICATE,
            now,
            reason=f"same as inbound #{duplicate.inbound_id}",
            ticket_id=duplicate.ticket_id,
            message_id=mid,
            duplicate_of=duplicate.inbound_id,
            decision=trail.outcome("duplicate", "already stored"),
        )
        number = first.number if first else None
        return Outcome("duplicate", number, "already stored", inbound_id, message_id=mid, thread="duplicate")
    cls = classify(parsed, env, ctx.identity, ctx.own_addresses)
    trail.classified(cls)
    if cls.kind is Kind.LOOP:
        return _kept(store, spooled, now, f"loop: {cls.reason}", mid, trail)
    security = ctx.config.main.security
    who = author(parsed, env, security.reply_to)
    early = _not_for_a_ticket(store, ctx, parsed, cls, env, who, spooled, now, trail)
    if early is not None:
        return early
    if parsed.from_addr is None:  # answered and recognised by the address that did name the sender
        parsed = replace(parsed, from_addr=who.address)
    released, origin = holds.released(store, replayed, env.source)
    channel = submission.read(raw, origin)  # mail another channel composed (API, form, staff): what it vouches for
    placed = _placed(store, ctx, raw, parsed, cls, env, spooled, now, channel, trail)
    if isinstance(placed, Outcome):
        return placed
    match, sender = placed
    forward = forward_intake.judge(parsed, cls, match, sender, ctx.directory, ctx.own_addresses, store, ctx.history)
    stop = _forwarded(store, ctx, parsed, env, spooled, now, forward, trail)
    if stop is not None:
        return stop
    parsed, sender, who = forward_intake.taken(forward, parsed, sender, who)  # a forward: the customer's mail
    trail.sender(sender)
    ticket = store.ticket(match.ticket_id) if match.ticket_id is not None else None
    admission = admit(
        match,
        sender,
        ticket,
        security.stranger_reply,
        ctx.config.main.lifecycle.reopen_window,
        now,
        machine=cls.automatic,
    )
    main = ctx.config.main
    closing = customer_close.judge(
        parsed, cls, sender, ticket, ctx.identity, main.tickets.customer_close, security.agent_authentication
    )
    trail.closing(closing)
    admission = customer_close.admitted(admission, closing, match, sender)
    trail.admitted(
        reject=admission.reject,
        follow_up_of=admission.follow_up_of,
        collaborator=admission.sender.address if admission.add_collaborator else None,
        to_ticket=admission.match.ticket_id is not None,
    )
    unproven = _unproven_commands(store, ctx, parsed, cls, sender, ticket, env, now, trail)
    if unproven is not None:
        return _kept(store, spooled, now, unproven, mid, trail)
    verdict = spam.verdict(parsed, env, origin, ctx.config.main.intake.spam, released=released)
    trail.spam(verdict)
    decision = route(parsed, env, ctx.config.rules, ctx.mailbox_topic(env.mailbox), ctx.rules, explain, verdict,
                     submission.chosen_topic(channel), submission.channel_name(channel))
    decision = submission.decided(channel, decision)
    decision = forward_intake.acknowledged(forward, decision, ctx.config.rules)  # a forward: acked if asked
    trail.forwarded(forward_intake.record(forward, decision))
    trail.routed(decision)
    refusal = admission.reject or (decision.reject if admission.match.ticket_id is None else None)
    if refusal is not None:  # refused mail stays with its sender; we keep only the record
        return _refused(store, ctx, parsed, cls, env, spooled, now, refusal, decision, trail)
    aside = _set_aside(store, ctx, spooled, now, admission, sender, decision, verdict, released, mid, trail,
                       by_agent=forward is not None or submission.by_agent(channel))
    if isinstance(aside, Outcome):
        return aside
    decision = aside
    if admission.match.ticket_id is None:
        teams = {t.name: list(t.members) for t in ctx.config.agents.teams}
        decision = choose_assignee(store, decision, teams)
    sla = None if ctx.history else ctx.config.sla
    writer = Writer(store, ctx.tag, blobs, ctx.own_addresses, now, sla, ctx.config.main.lifecycle.satisfaction_question)
    change, ticket = _act(writer, ctx, parsed, inbound_id, cls, decision, env, admission, who, closing,
                          note=submission.is_note(channel))
    change = forward_intake.recorded(writer, change, forward, inbound_id)
    submission.recorded(writer, change, channel)
    trail.acted(change)
    notes = (
        []
        if ctx.history
        else notify_mail(store, ctx.notifier, change, ticket, parsed, cls, admission.sender, decision, env, now)
    )
    support = support_address(parsed, env, ctx.own_addresses, ctx.config.main.intake.addresses[0])
    notes += forward_intake.receipt(store, ctx.notifier, forward, ticket, change, decision, support, parsed.sha256, now)
    trail.notified(notes)
    trail.speaks_as(ticket_sender(ctx.notifier, ticket))
    record = trail.outcome("accepted", None)
    spooling.finish(
        store, spooled, InboundStatus.ACCEPTED, now, ticket_id=change.ticket_id, message_id=mid, decision=record
    )
    sent = tuple((n.kind, n.to) for n in notes)
    via = "new" if change.created else admission.match.via
    return Outcome("accepted", change.number, seen, inbound_id, decision.trace, sent, decision, mid, via, record)


def _undo(savepoint: SessionTransaction) -> None:
    """Roll back this mail's savepoint. On a connection the database dropped even that fails: the
    whole batch is then rolled back and the sources retry (TempFail), with nothing half-written."""
    try:
        savepoint.rollback()
    except SQLAlchemyError as exc:
        raise TempFail(f"database unavailable: {exc}") from exc


def process_one(
    session: Session,
    raw: RawMail,
    env: Envelope,
    ctx: Context,
    blobs: BlobStore,
    parsed: Parsed = None,
    *,
    explain: bool = False,
    replayed: int | None = None,
) -> Outcome:
    """One mail in its own savepoint; anything but a database failure ends in a stored outcome.

    ``parsed`` is ``parse(raw)`` done beforehand, off this thread (parsing is pure: see ``ProcessWriter``).
    ``explain`` puts every rule's trace line in the outcome (dry runs); intake does without.
    ``replayed``: the id of a kept mail replayed in place (``quarantine reprocess``): it takes the outcome.
    """
    now = env.received_at if ctx.history else ctx.clock.now()  # an archive's mail happened at its own date
    savepoint = session.begin_nested()
    try:
        outcome = _process(session, raw, env, ctx, now, blobs, parsed, explain, replayed)
    except TempFail:
        _undo(savepoint)
        raise
    except DBAPIError as exc:
        _undo(savepoint)
        if is_transient(exc):
            raise TempFail(f"database unavailable: {exc.orig or exc}") from exc
        log.exception("database refused this message; quarantined")
        reason = f"internal error: {exc.orig or exc!r}"
    except OverLimit as exc:
        _undo(savepoint)
        reason = str(exc)
    except ParseError as exc:
        _undo(savepoint)
        reason = f"unparseable: {exc}"
    except Exception as exc:  # a bug of ours must not lose the mail: keep it with the reason
        log.exception("processing failed; message quarantined")
        _undo(savepoint)
        reason = f"internal error: {exc!r}"
    else:
        savepoint.commit()
        return outcome
    kept = spooling.keep_failed(Store(session), raw, env, InboundStatus.QUARANTINED, reason, now, replayed)
    return Outcome("quarantined", None, reason, kept)


def ingest(raw: RawMail, envelope: Envelope, ctx: Context, *, dry_run: bool = False) -> Outcome:
    """Store one mail and commit; raise Rejected (after recording it) or TempFail."""
    if dry_run:
        with ctx.db.sessions() as session:
            session.begin()
            try:
                blobs = BlobStore(ctx.blobs.root, dry_run=True)
                return process_one(session, raw, envelope, ctx, blobs, explain=True)
            finally:
                session.rollback()
    with ctx.db.transaction() as session:
        outcome = process_one(session, raw, envelope, ctx, ctx.blobs)
    if outcome.status == "rejected":
        raise Rejected(outcome.reason or "rejected by policy")
    return outcome


def fence(session: Session, env: Envelope, held: dict[tuple[str, int], bool]) -> None:
    """A mail fetched under a mailbox lease is stored only while that lease is current, checked in
    the transaction that stores it (``held`` keeps the answer for the rest of the batch)."""
    if env.lease_token is None or env.mailbox is None:
        return
    key = (env.mailbox, env.lease_token)
    if key not in held:
        held[key] = leases.still_held(session, *key)
    if not held[key]:
        raise LeaseLost(f"the lease on mailbox {env.mailbox} passed to another daemon")


def ingest_batch(
    items: Sequence[tuple[RawMail, Envelope]], ctx: Context, parsed: Sequence[Parsed] = ()
) -> list[Outcome | TempFail]:
    """Group commit: many mails, one transaction, one fsync. Nothing is acknowledged before commit."""
    try:
        with ctx.db.transaction(bulk=True) as session:
            outcomes: list[Outcome | TempFail] = []
            held: dict[tuple[str, int], bool] = {}
            for i, (raw, env) in enumerate(items):
                try:
                    fence(session, env, held)
                    pre = parsed[i] if i < len(parsed) else None
                    outcomes.append(process_one(session, raw, env, ctx, ctx.blobs, pre))
                except TempFail as exc:
                    outcomes.append(exc)
    except TempFail as exc:
        return [exc] * len(items)
    return outcomes
