"""Stage 6: who is writing — requester, collaborator, agent or stranger — and may they act on this ticket?

Decision order (README, "Who may do what"):

1. From is in the agent directory *and* the mail is authenticated (the agent's own
   signed reply address, or a trusted ``Authentication-Results`` with DKIM/SPF
   passing for the agent's domain) -> agent. From alone is never enough: a failed
   check makes the mail an ordinary message and raises an alert.
2. No ticket matched -> requester of a new ticket.
3. A participant of the matched ticket -> their role (requester or collaborator).
4. The mail answers our mail for that ticket (signed reply address) -> collaborator.
5. Anyone else is a stranger; ``security.stranger_reply`` decides: a new ticket
   (default), added as collaborator, or rejected with an explanation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mailgate.config import AgentAuthentication
from mailgate.domain import ParsedMail, Role, Sender, Status, ThreadMatch
from mailgate.identity import Identity
from mailgate.storage.model import Ticket
from mailgate.storage.store import Store

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"(?:@[^\s;()"]+)?|\((?:[^()\\]|\\.)*\)|[;=]|[^\s;="()]+')
_PROPERTY = ("header.d", "header.i", "smtp.mailfrom", "smtp.from")


def _domain(value: str) -> str:
    return value.rpartition("@")[2].lower().strip(">").rstrip(".")


def _results(value: str) -> tuple[str, list[tuple[str, str, dict[str, str]]]]:
    """(authserv-id, [(method, result, properties)]) of one Authentication-Results header (RFC 8601).

    Tokens, not text searches: a quoted value or a comment is the sender's words (``smtp.mailfrom=
    "x;dkim=pass header.d=example.com"@attacker``) and must never be read as a result of its own.
    """
    statements: list[list[str]] = [[]]
    for token in _TOKEN.findall(value):
        if token.startswith("("):
            continue  # a comment
        if token == ";":
            statements.append([])
        else:
            statements[-1].append(token[1:-1] if token.startswith('"') and token.endswith('"') else token)
    authserv = statements[0][0].lower() if statements[0] else ""
    found = []
    for words in statements[1:]:
        if len(words) < 3 or words[1] != "=":
            continue
        method, result = words[0].split("/", 1)[0].lower(), words[2].lower()
        props = {words[i].lower(): words[i + 2] for i in range(3, len(words) - 2) if words[i + 1] == "="}
        found.append((method, result, props))
    return authserv, found


def authenticated_by_mx(parsed: ParsedMail, address: str, policy: AgentAuthentication) -> str | None:
    """Which method vouches for ``address``, per the topmost Authentication-Results of a trusted server."""
    trusted = {a.lower() for a in policy.authserv_ids}
    if not trusted:
        return None
    for name, value in parsed.raw_headers:  # topmost first: the receiving MX prepends its own
        if name.lower() != "authentication-results":
            continue
        authserv, results = _results(value)
        if authserv not in trusted:
            continue
        wanted = _domain(address)
        for method, result, props in results:
            if method not in policy.methods or result != "pass":
                continue
            domains = {_domain(v) for k, v in props.items() if k in _PROPERTY}
            if wanted in domains or any(wanted.endswith("." + d) for d in domains):
                return f"{method}=pass ({authserv})"
        return None  # only the first header from our own MX counts; later ones are the sender's words
    return None


def _agent_token(identity: Identity, recipients: tuple[str, ...], match: ThreadMatch, address: str) -> bool:
    """The agent's own address for this ticket, or for one merged into it (their alerts of before the merge)."""
    if match.ticket_id is None:
        return False
    tickets = {match.ticket_id, *(ticket_id for ticket_id, _number in match.merged)}
    return any(identity.read_token(r, "a", address) in tickets for r in recipients)


def authorize(
    parsed: ParsedMail,
    match: ThreadMatch,
    store: Store,
    agents: dict[str, str],
    identity: Identity,
    policy: AgentAuthentication,
    recipients: tuple[str, ...],
) -> Sender:
    address = parsed.from_addr.email if parsed.from_addr else ""
    name = parsed.from_addr.name if parsed.from_addr else ""
    suspect = ""
    if address in agents:
        how = (
            "own reply address"
            if policy.reply_token and _agent_token(identity, recipients, match, address)
            else authenticated_by_mx(parsed, address, policy)
        )
        if how:
            return Sender(address, Role.AGENT, None, name or agents[address], authenticated=True, reason=how)
        suspect = "From names an agent but the mail is not authenticated; treated as an ordinary message"
    if match.ticket_id is None:
        return Sender(address, Role.REQUESTER, None, name, reason=suspect)
    for email, _name, role in store.participants(match.ticket_id):
        if email == address:
            return Sender(address, Role(role), None, name, reason=suspect)
    if match.via == "token":  # the mail answers a mail we sent for this ticket
        return Sender(address, Role.COLLABORATOR, None, name, reason=suspect or "answered our signed reply address")
    return Sender(address, Role.STRANGER, None, name, reason=suspect)


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether the mail joins the matched ticket, and if not what happens instead."""

    match: ThreadMatch
    sender: Sender
    follow_up_of: str | None = None  # ticket number a new ticket refers back to
    reject: str | None = None
    add_collaborator: bool = False


def admit(
    match: ThreadMatch,
    sender: Sender,
    ticket: Ticket | None,
    stranger_policy: str,
    reopen_window: timedelta,
    now: datetime,
    *,
    machine: bool = False,
) -> Admission:
    """Apply the stranger policy and the reopen window of closed tickets.

    Being a machine never widens who may write into a ticket: a stranger's mail with
    ``Auto-Submitted`` or an out-of-office subject meets the stranger policy exactly as
    the same mail without them would. The one exception asks for proof, not headers:
    machine mail that found the ticket through our own signed ids (our reply address or
    our Message-ID, e.g. an out-of-office answering our acknowledgment from a forwarding
    address) is recorded there as a system message that reopens nothing and alerts
    nobody. A participant's machine mail (their own out-of-office) stays on the ticket
    and never reopens it or opens a follow-up.
    """
    if ticket is None:
        return Admission(match, sender)
    if machine and (match.signed or sender.role is not Role.STRANGER):
        return Admission(match, sender)
    number = ticket.number
    if sender.role is Role.STRANGER:
        if stranger_policy == "reject":
            return Admission(
                match, sender, reject=f"you are not a participant of ticket {number}; please write to us in a new mail"
            )
        # another desk's numbers are often sequential: guessing one must not make a stranger a collaborator
        if stranger_policy == "collaborator" and match.via != "foreign_tag":
            return Admission(
                match,
                replace(sender, role=Role.COLLABORATOR, reason="added by stranger_reply policy"),
                add_collaborator=True,
            )
        return Admission(ThreadMatch(None, "none"), replace(sender, role=Role.REQUESTER), follow_up_of=number)
    too_late = ticket.closed_at is not None and now - ticket.closed_at > reopen_window
    if ticket.status == Status.CLOSED.value and too_late and sender.role is not Role.AGENT:
        return Admission(ThreadMatch(None, "none"), replace(sender, role=Role.REQUESTER), follow_up_of=number)
    return Admission(match, sender, add_collaborator=match.via == "token" and sender.role is Role.COLLABORATOR)
